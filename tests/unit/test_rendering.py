import pytest

from core.domain.errors import InvalidInput
from core.services.rendering import RenderError, check_header, render, template_variables


def test_variables_are_listed():
    assert template_variables("Hi {{ name }} {% if vip %}{{ code }}{% endif %}") == ["code", "name", "vip"]


def test_syntax_error_names_the_line():
    with pytest.raises(InvalidInput, match="line 2"):
        template_variables("ok\n{% if %}")


def test_html_is_autoescaped():
    assert render("t1", "<p>{{ name }}</p>", {"name": "<script>"}, html=True) == "<p>&lt;script&gt;</p>"


def test_missing_placeholder_is_a_render_error():
    with pytest.raises(RenderError, match="missing placeholder"):
        render("t2", "{{ nope }}", {}, html=True)


def test_sandbox_blocks_attribute_escape():
    with pytest.raises(RenderError):
        render("t3", "{{ ''.__class__.__mro__[1].__subclasses__() }}", {}, html=True)


def test_header_injection_refused():
    with pytest.raises(RenderError, match="header injection"):
        check_header("subject", "Hi\r\nBcc: victim@example.com")
