"""Checks request bodies spillway translated against the providers' own published schemas.

Usage: validate_requests.py DIR — every `<case>--<target>.json` in DIR is one body as spillway
would send it to `<target>`:

- `converse`: Bedrock Converse / ConverseStream, through botocore's `bedrock-runtime` service
  model and botocore's own parameter validator (the body plus the `modelId` the URL carries);
- `gemini`: Vertex AI generateContent, each top-level field through the google-genai SDK's
  pydantic types (which forbid unknown fields);
- `anthropic`, `bedrock_invoke`, `vertex_anthropic`: Anthropic Messages (and its bodies on
  Bedrock InvokeModel and Vertex rawPredict), through the anthropic SDK's request types;
- `openai`: Chat Completions, through the openai SDK's request types;
- `responses`: the OpenAI Responses API, through the openai SDK's request types;
- `count_*`: token counting — Anthropic's and Claude on Vertex's `count_tokens` (the anthropic
  SDK's types), Bedrock `CountTokens` (botocore, and the InvokeModel body inside it through the
  anthropic SDK's types), Gemini `countTokens`, OpenAI's Responses `input_tokens` (the openai
  SDK's types).

The SDKs' TypedDicts and models accept unknown fields for forward compatibility; here they are
made to refuse them, so a misspelt or misplaced field fails. Prints every problem; exits 1 if
there is one, 2 if DIR holds no body at all.
"""

import base64
import importlib
import json
import pathlib
import pkgutil
import sys

import pydantic
import typing_extensions

STRICT = pydantic.ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def forbid_unknown_fields(package):
    """Makes every request TypedDict and model of an SDK package refuse fields it does not
    define."""
    models = []
    names = [package.__name__] + [i.name for i in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception:  # an optional extra the SDK guards; not a request type
            continue
        for obj in vars(module).values():
            if not isinstance(obj, type) or not obj.__module__.startswith(package.__name__):
                continue
            if typing_extensions.is_typeddict(obj):
                obj.__pydantic_config__ = STRICT
            elif issubclass(obj, pydantic.BaseModel):
                obj.model_config["extra"] = "forbid"
                models.append(obj)
    for m in models:
        m.model_rebuild(force=True)


def walk(value):
    """Iterable fields validate lazily: walking them validates every item."""
    if isinstance(value, dict):
        for v in value.values():
            walk(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            walk(v)
    elif hasattr(value, "__iter__") and not isinstance(value, (str, bytes, bytearray)):
        for v in value:
            walk(v)


def problems(adapter, body):
    """What an SDK's request type finds wrong with `body`, its lazily checked lists included."""
    try:
        walk(adapter.validate_python(body))
    except pydantic.ValidationError as e:
        return [str(e)]
    return []


class Anthropic:
    def __init__(self):
        import anthropic.types
        from anthropic.types import message_create_params

        forbid_unknown_fields(anthropic.types)
        self.adapter = pydantic.TypeAdapter(message_create_params.MessageCreateParamsNonStreaming)

    def check(self, body, target):
        body = dict(body)
        if target == "anthropic":
            body.pop("stream", None)
        else:
            # Bedrock and Vertex take the model from the URL and the version in the body.
            want = {"bedrock_invoke": "bedrock-2023-05-31", "vertex_anthropic": "vertex-2023-10-16"}[target]
            version = body.pop("anthropic_version", None)
            if version != want:
                return [f"anthropic_version is {version!r}, {target} wants {want!r}"]
            if "model" in body:
                return [f"{target} takes the model from the URL; the body names {body['model']!r}"]
            if target == "bedrock_invoke" and "stream" in body:
                return [f"{target} streams by URL; the body has stream={body['stream']!r}"]
            body.pop("stream", None)
            body.pop("anthropic_beta", None)
            body["model"] = "from-the-url"
        return problems(self.adapter, body)


class OpenAi:
    def __init__(self):
        import openai.types.chat
        import openai.types.shared_params
        from openai.types.chat import completion_create_params

        # What a chat request can name: its own types and the shared ones.
        forbid_unknown_fields(openai.types.chat)
        forbid_unknown_fields(openai.types.shared_params)
        self.adapter = pydantic.TypeAdapter(completion_create_params.CompletionCreateParamsNonStreaming)

    def check(self, body, _target):
        body = dict(body)
        body.pop("stream", None)
        body.pop("stream_options", None)
        return problems(self.adapter, body)


class Responses:
    def __init__(self):
        import openai.types.responses
        import openai.types.shared_params
        from openai.types.responses import response_create_params

        forbid_unknown_fields(openai.types.responses)
        forbid_unknown_fields(openai.types.shared_params)
        self.adapter = pydantic.TypeAdapter(response_create_params.ResponseCreateParamsNonStreaming)

    def check(self, body, _target):
        body = dict(body)
        body.pop("stream", None)
        return problems(self.adapter, body)


class CountAnthropic:
    def __init__(self):
        import anthropic.types
        from anthropic.types import message_count_tokens_params

        forbid_unknown_fields(anthropic.types)
        self.adapter = pydantic.TypeAdapter(message_count_tokens_params.MessageCountTokensParams)

    def check(self, body, target):
        body = dict(body)
        if target == "count_vertex_anthropic":
            version = body.pop("anthropic_version", None)
            if version != "vertex-2023-10-16":
                return [f"anthropic_version is {version!r}, Vertex wants 'vertex-2023-10-16'"]
            if "model" not in body:
                return ["Claude on Vertex counts for the model named in the body; it has none"]
        return problems(self.adapter, body)


class CountBedrock:
    def __init__(self):
        import botocore.session
        from botocore.validate import ParamValidator

        model = botocore.session.get_session().get_service_model("bedrock-runtime")
        self.shape = model.operation_model("CountTokens").input_shape
        self.validator = ParamValidator()
        self.invoke = Anthropic()

    def check(self, body, _target):
        params = Converse.decode_blobs({"modelId": "from-the-url", **body}, self.shape)
        report = self.validator.validate(params, self.shape)
        if report.has_errors():
            return [report.generate_report()]
        inner = params["input"].get("invokeModel", {}).get("body")
        if inner is not None:
            # The InvokeModel body Bedrock counts is Claude's own request.
            return self.invoke.check(json.loads(inner), "bedrock_invoke")
        return []


class CountGemini:
    def __init__(self):
        self.gemini = Gemini()

    def check(self, body, target):
        extra = [k for k in body if k not in ("contents", "systemInstruction", "tools")]
        if extra:
            return [f"{k}: not a field of a countTokens request" for k in extra]
        return self.gemini.check(body, target)


class CountOpenAi:
    def __init__(self):
        import openai.types.responses
        import openai.types.shared_params
        from openai.types.responses import input_token_count_params

        forbid_unknown_fields(openai.types.responses)
        forbid_unknown_fields(openai.types.shared_params)
        self.adapter = pydantic.TypeAdapter(input_token_count_params.InputTokenCountParams)

    def check(self, body, _target):
        return problems(self.adapter, body)


class Converse:
    def __init__(self):
        import botocore.session
        from botocore.validate import ParamValidator

        model = botocore.session.get_session().get_service_model("bedrock-runtime")
        self.shape = model.operation_model("Converse").input_shape
        self.validator = ParamValidator()

    @staticmethod
    def decode_blobs(value, shape):
        """JSON carries blobs as base64 (as botocore's serializer writes them); the validator
        wants the bytes."""
        if shape.type_name == "blob" and isinstance(value, str):
            return base64.b64decode(value)
        if shape.type_name == "structure" and isinstance(value, dict):
            return {
                k: Converse.decode_blobs(v, shape.members[k]) if k in shape.members else v for k, v in value.items()
            }
        if shape.type_name == "list" and isinstance(value, list):
            return [Converse.decode_blobs(v, shape.member) for v in value]
        return value

    def check(self, body, _target):
        params = self.decode_blobs({"modelId": "from-the-url", **body}, self.shape)
        report = self.validator.validate(params, self.shape)
        return [report.generate_report()] if report.has_errors() else []


class Gemini:
    def __init__(self):
        from google.genai import types

        self.fields = {
            "contents": (list, types.Content),
            "systemInstruction": (None, types.Content),
            "tools": (list, types.Tool),
            "toolConfig": (None, types.ToolConfig),
            "generationConfig": (None, types.GenerationConfig),
            "safetySettings": (list, types.SafetySetting),
            "labels": (None, None),
        }

    def check(self, body, _target):
        problems = []
        for key, value in body.items():
            if key not in self.fields:
                problems.append(f"{key}: not a field of a generateContent request")
                continue
            many, model = self.fields[key]
            if model is None:
                continue
            items = value if many else [value]
            if many and not isinstance(value, list):
                problems.append(f"{key}: not a list")
                continue
            for i, item in enumerate(items):
                try:
                    model.model_validate_json(json.dumps(item))
                except pydantic.ValidationError as e:
                    problems.append(f"{key}[{i}]: {e}")
        if "contents" not in body:
            problems.append("contents: missing")
        return problems


def main():
    root = pathlib.Path(sys.argv[1])
    checkers = {}
    kinds = {
        "converse": Converse,
        "gemini": Gemini,
        "anthropic": Anthropic,
        "bedrock_invoke": Anthropic,
        "vertex_anthropic": Anthropic,
        "openai": OpenAi,
        "responses": Responses,
        "count_anthropic": CountAnthropic,
        "count_vertex_anthropic": CountAnthropic,
        "count_bedrock": CountBedrock,
        "count_gemini": CountGemini,
        "count_openai": CountOpenAi,
    }
    files = sorted(root.glob("*--*.json"))
    if not files:
        print(f"no request bodies in {root}")
        return 2
    failed = 0
    for f in files:
        target = f.stem.rsplit("--", 1)[1]
        if target not in kinds:
            print(f"{f.name}: unknown target {target!r}")
            failed += 1
            continue
        kind = kinds[target]
        if kind not in checkers:
            checkers[kind] = kind()
        checker = checkers[kind]
        problems = checker.check(json.loads(f.read_text()), target)
        for p in problems:
            print(f"{f.name}: {p}")
        failed += bool(problems)
    print(f"{len(files) - failed} of {len(files)} request bodies match the providers' schemas")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
