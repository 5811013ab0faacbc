"""The text part: a template's own text version, or readable text derived from the HTML."""

from core.services.plaintext import html_to_text
from core.services.rendering import render_mail


def test_links_keep_their_urls_and_structure_survives():
    html = ("<html><head><title>T</title><style>p{color:red}</style></head><body>"
            "<h1>Hello &amp; welcome</h1><p>Hi  Ann,<br>see <a href='https://x.org/a?b=1'>our offer</a> "
            "or <a href='https://y.org'>https://y.org</a>.</p><ul><li>one</li><li>two</li></ul>"
            "<a href='mailto:help@x.org'>help@x.org</a> <img src='l.png' alt='Logo'>"
            "<script>alert(1)</script></body></html>")
    assert html_to_text(html) == ("Hello & welcome\n\nHi Ann,\nsee our offer (https://x.org/a?b=1) or https://y.org.\n\n"
                                  "- one\n- two\n\nhelp@x.org [Logo]\n")


def test_unsafe_link_schemes_are_dropped_but_their_words_kept():
    assert html_to_text("<a href='javascript:alert(1)'>click</a>") == "click\n"


def test_an_empty_link_label_becomes_the_url_and_broken_html_never_raises():
    assert html_to_text("<p><a href='https://x.org/u'><img src=a.png></a></p>") == "https://x.org/u\n"
    assert html_to_text("<p><b>unclosed <i>tags") == "unclosed tags\n"


def test_render_mail_uses_the_text_version_when_there_is_one():
    mail = render_mail("pt1", "Hi {{ n }}", "<p>{{ n }} &amp; co</p>", "Dear {{ n }} <raw>", {"n": "<Ann>"})
    assert mail.subject == "Hi <Ann>" and mail.html == "<p>&lt;Ann&gt; &amp; co</p>"
    assert mail.text == "Dear <Ann> <raw>" and not mail.text_derived  # text is not HTML-escaped


def test_render_mail_derives_the_text_from_the_rendered_html():
    mail = render_mail("pt2", "S", "<p>Hi {{ n }}</p><p><a href='{{ url }}'>go</a></p>", None,
                       {"n": "Bo", "url": "https://x.org/?a=1&b=2"})
    assert mail.text_derived and mail.text == "Hi Bo\n\ngo (https://x.org/?a=1&b=2)\n"
