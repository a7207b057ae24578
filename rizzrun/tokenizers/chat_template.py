"""Chat templates rendered as transformers renders them, inside a jinja2 sandbox.

`compile_template(source)` gives a template that sees what transformers gives templates
(trim_blocks + lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, a `tojson`
that does not HTML-escape, the `{% generation %}` tag) and nothing of Python's internals (an
immutable sandbox; `namespace` refuses underscore names). `template_messages` shapes the
messages a template sees.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

def compile_template(source: str):
    """A chat template compiled in a sandbox with what transformers gives templates:
    trim_blocks + lstrip_blocks, loop controls, `raise_exception`, `strftime_now`, a `tojson`
    that does not HTML-escape, and the `{% generation %}` tag (rendered as its body)."""
    import datetime

    import jinja2
    import jinja2.ext
    import jinja2.nodes
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class GenerationTag(jinja2.ext.Extension):
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

        def _body(self, caller):
            return caller()

    class Namespace(jinja2.utils.Namespace):
        """jinja's namespace, refusing underscore names (no route to Python internals)."""

        def __init__(*args, **kwargs):
            self, rest = args[0], args[1:]
            values = dict(*rest, **kwargs)
            for name in values:
                Namespace._check(name)
            jinja2.utils.Namespace.__init__(self, values)

        def __setitem__(self, name, value):
            Namespace._check(name)
            jinja2.utils.Namespace.__setitem__(self, name, value)

        @staticmethod
        def _check(name):
            if isinstance(name, str) and name.startswith("_"):
                raise jinja2.exceptions.SecurityError(f"chat template: namespace attribute {name!r} is not allowed")

    def raise_exception(text):
        raise jinja2.exceptions.TemplateError(text)

    def tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[GenerationTag, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.globals["namespace"] = Namespace
    return env.from_string(source)


REASONING_KEYS = ("reasoning_content", "thinking", "reasoning")


def template_messages(messages: Sequence[Mapping]) -> list[dict]:
    """Messages as a template sees them: plain dicts, keys whose value is None dropped, the
    reasoning of a message under both `reasoning_content` and `thinking`."""
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise TypeError(f"apply_chat_template: message {i} is a {type(message).__name__}; "
                            f"expected a mapping such as {{'role': 'user', 'content': 'Hi'}}")
        message = {k: v for k, v in message.items() if v is not None}
        reasoning = next((message[k] for k in REASONING_KEYS if k in message), None)
        if reasoning is not None:
            message = {"thinking": reasoning, **message, "reasoning_content": reasoning}
        out.append(message)
    return out
