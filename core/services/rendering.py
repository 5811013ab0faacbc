"""Jinja2 rendering in an immutable sandbox, compiled once per template version."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from jinja2 import StrictUndefined, TemplateSyntaxError, meta
from jinja2.exceptions import SecurityError, TemplateError, UndefinedError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from core.domain.errors import InvalidInput
from core.services.plaintext import html_to_text

_html_env = ImmutableSandboxedEnvironment(autoescape=True, undefined=StrictUndefined)
_text_env = ImmutableSandboxedEnvironment(autoescape=False, undefined=StrictUndefined)


class RenderError(Exception):
    """A message could not be rendered; the reason is kept on the message."""


def template_variables(source: str, what: str = "template") -> list[str]:
    """Parse in the sandbox (raises InvalidInput with the line) and list the variables used."""
    try:
        ast = _html_env.parse(source)
    except TemplateSyntaxError as exc:
        raise InvalidInput(f"{what} syntax error at line {exc.lineno}: {exc.message}",
                           [{"line": exc.lineno, "message": exc.message}]) from None
    return sorted(meta.find_undeclared_variables(ast) - set(_html_env.globals))  # range, dict… are not placeholders


@lru_cache(maxsize=256)
def _compiled(key: str, source: str, html: bool):  # noqa: ANN202 - jinja Template
    return (_html_env if html else _text_env).from_string(source)


def render(cache_key: str, source: str, data: dict[str, str], *, html: bool) -> str:
    try:
        return _compiled(cache_key, source, html).render(**data)
    except UndefinedError as exc:
        raise RenderError(f"missing placeholder: {exc.message}") from None
    except SecurityError as exc:
        raise RenderError(f"template tried an unsafe operation: {exc}") from None
    except (TemplateError, TypeError, ValueError, ArithmeticError) as exc:
        raise RenderError(f"render failed: {type(exc).__name__}: {exc}") from None


def check_header(name: str, value: str) -> str:
    """Refuse header injection: a CR or LF in a header value would start a new header."""
    if "\r" in value or "\n" in value:
        raise RenderError(f"{name} contains a line break (header injection refused)")
    return value


@dataclass(frozen=True)
class RenderedMail:
    subject: str
    html: str
    text: str
    text_derived: bool  # True: the template has no text version; ``text`` was made from the HTML


def render_mail(cache_key: str, subject_src: str, html_src: str, text_src: str | None,
                data: dict[str, str]) -> RenderedMail:
    """Subject, HTML and text of one mail. The text part is the template's text version, or is
    derived from the rendered HTML (links kept as URLs). Raises RenderError."""
    subject = check_header("subject", render(cache_key + ":s", subject_src, data, html=False))
    html = render(cache_key + ":h", html_src, data, html=True)
    if text_src is not None:
        return RenderedMail(subject, html, render(cache_key + ":t", text_src, data, html=False), False)
    return RenderedMail(subject, html, html_to_text(html), True)
