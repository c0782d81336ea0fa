"""Chat templates: sgpu-model's Jinja interpreter (src/model/jinja.c) against
Debian's python3-jinja2 configured as HF's apply_chat_template configures it
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loopcontrols,
json.dumps-based tojson, raise_exception), byte for byte, on templates with
the structure of widely used model families, several message lists each;
hostile templates end in a clean error; the server's /apply-template and
/v1/chat/completions use the GGUF file's tokenizer.chat_template.

The templates below are written for this test after the published ones (same
tags, branches and filters); the expected renderings are computed here by
jinja2, independently of sgpu.
Run: SGPU_BIN=/abs/bin /usr/bin/python3 tests/model/chat_template_test.py -v
"""
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(__file__))
from model_server_test import MODEL, Server  # noqa: E402

import jinja2  # noqa: E402  (python3-jinja2, test-only reference)
from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: E402

BOS, EOS = "<s>", "</s>"  # the tiny SPM vocabulary's BOS/EOS texts


class RaisedError(Exception):
    pass


def _raise(msg):
    raise RaisedError(msg)


def _tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


ENV = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                    extensions=["jinja2.ext.loopcontrols"])
ENV.filters["tojson"] = _tojson
ENV.globals["raise_exception"] = _raise
ENV.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)  # as HF


def reference(src, messages, gen, tools=None):
    """(ok, text-or-error-message) as HF's apply_chat_template renders it."""
    # HF binds tools and documents, None when not given
    kw = dict(messages=messages, bos_token=BOS, eos_token=EOS, add_generation_prompt=gen,
              tools=tools, documents=None)
    try:
        return True, ENV.from_string(src).render(**kw)
    except RaisedError as e:
        return False, str(e)
    except (TypeError, RecursionError, jinja2.exceptions.UndefinedError):
        return False, None  # the template fails on these messages: sgpu must fail too


T = {}

T["llama3"] = r"""{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>

'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>

' }}{% endif %}"""

T["llama31"] = r"""{{- bos_token }}
{%- if custom_tools is defined %}
    {%- set tools = custom_tools %}
{%- endif %}
{%- if not tools_in_user_message is defined %}
    {%- set tools_in_user_message = true %}
{%- endif %}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}

{#- This block extracts the system message, so we can slot it into the right place. #}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}

{#- System message + builtin tools #}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{%- if builtin_tools is defined or tools is not none %}
    {{- "Environment: ipython\n" }}
{%- endif %}
{%- if builtin_tools is defined %}
    {{- "Tools: " + builtin_tools | reject('equalto', 'code_interpreter') | join(", ") + "\n\n"}}
{%- endif %}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{%- if tools is not none and not tools_in_user_message %}
    {{- "You have access to the following functions. To call a function, please respond with JSON for a function call." }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
{%- endif %}
{{- system_message }}
{{- "<|eot_id|>" }}

{#- Custom tools are passed in a user message with some extra guidance #}
{%- if tools_in_user_message and not tools is none %}
    {#- Extract the first user message so we can plug it in here #}
    {%- if messages | length != 0 %}
        {%- set first_user_message = messages[0]['content']|trim %}
        {%- set messages = messages[1:] %}
    {%- else %}
        {{- raise_exception("Cannot put tools in the first user message when there's no first user message!") }}
{%- endif %}
    {{- '<|start_header_id|>user<|end_header_id|>\n\n' -}}
    {{- "Given the following functions, please respond with a JSON for a function call " }}
    {{- "with its proper arguments that best answers the given prompt.\n\n" }}
    {{- 'Respond in the format {"name": function name, "parameters": dictionary of argument name and its value}.' }}
    {{- "Do not use variables.\n\n" }}
    {%- for t in tools %}
        {{- t | tojson(indent=4) }}
        {{- "\n\n" }}
    {%- endfor %}
    {{- first_user_message + "<|eot_id|>"}}
{%- endif %}

{%- for message in messages %}
    {%- if not (message.role == 'ipython' or message.role == 'tool' or 'tool_calls' in message) %}
        {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
    {%- elif 'tool_calls' in message %}
        {%- if not message.tool_calls|length == 1 %}
            {{- raise_exception("This model only supports single tool-calls at once!") }}
        {%- endif %}
        {%- set tool_call = message.tool_calls[0].function %}
        {%- if builtin_tools is defined and tool_call.name in builtin_tools %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- "<|python_tag|>" + tool_call.name + ".call(" }}
            {%- for arg_name, arg_val in tool_call.arguments | items %}
                {{- arg_name + '="' + arg_val + '"' }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- endif %}
                {%- endfor %}
            {{- ")" }}
        {%- else  %}
            {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' -}}
            {{- '{"name": "' + tool_call.name + '", ' }}
            {{- '"parameters": ' }}
            {{- tool_call.arguments | tojson }}
            {{- "}" }}
        {%- endif %}
        {%- if builtin_tools is defined %}
            {#- This means we're in ipython mode #}
            {{- "<|eom_id|>" }}
        {%- else %}
            {{- "<|eot_id|>" }}
        {%- endif %}
    {%- elif message.role == "tool" or message.role == "ipython" %}
        {{- "<|start_header_id|>ipython<|end_header_id|>\n\n" }}
        {%- if message.content is mapping or message.content is iterable %}
            {{- message.content | tojson }}
        {%- else %}
            {{- message.content }}
        {%- endif %}
        {{- "<|eot_id|>" }}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}
"""

T["mistral_v1"] = r"""{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"""

T["mistral_v3"] = r"""{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content'] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}
        {{- raise_exception('After the optional system message, conversation roles must alternate user/assistant/user/assistant/...') }}
    {%- endif %}
    {%- if message['role'] == 'user' %}
        {%- if loop.last and system_message is defined %}
            {{- '[INST] ' + system_message + '\n\n' + message['content'] + '[/INST]' }}
        {%- else %}
            {{- '[INST] ' + message['content'] + '[/INST]' }}
        {%- endif %}
    {%- elif message['role'] == 'assistant' %}
        {{- ' ' + message['content']|trim + eos_token}}
    {%- else %}
        {{- raise_exception('Only user and assistant roles are supported, with the exception of an initial optional system message!') }}
    {%- endif %}
{%- endfor %}
"""

T["gemma"] = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + message['content'] | trim + '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\n'}}{% endif %}"""

T["gemma3"] = r"""{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- if messages[0]['content'] is string -%}
        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- else -%}
        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}
    {%- endif -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

T["phi3"] = r"""{% for message in messages %}{% if message['role'] == 'system' %}{{'<|system|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'user' %}{{'<|user|>
' + message['content'] + '<|end|>
'}}{% elif message['role'] == 'assistant' %}{{'<|assistant|>
' + message['content'] + '<|end|>
'}}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>
' }}{% else %}{{ eos_token }}{% endif %}"""

T["deepseek"] = r"""{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ 'User: ' + message['content'] + '\n\n' }}{% elif message['role'] == 'assistant' %}{{ 'Assistant: ' + message['content'] + eos_token }}{% elif message['role'] == 'system' %}{{ message['content'] + '\n\n' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"""

T["deepseek_r1"] = r"""{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}{%- for message in messages %}{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}{%- else %}{{'\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + '\n' + '```json' + '\n' + tool['function']['arguments'] + '\n' + '```' + '<｜tool▁call▁end｜>'}}{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}{%- if message['role'] == 'assistant' and message['content'] is not none %}{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}{%- set ns.is_tool = false -%}{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}{% set content = content.split('</think>')[-1] %}{% endif %}{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- set ns.is_output_first = false %}{%- else %}{{'\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}{%- endif %}{%- endfor -%}{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\n'}}{% endif %}"""

T["command_r"] = r"""{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% elif false == true %}{% set loop_messages = messages %}{% set system_message = 'You are Command-R, a brilliant, sophisticated, AI-assistant trained to assist human users by providing thorough responses. You are trained by Cohere.' %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% if system_message != false %}{{ '<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>' + system_message + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% set content = message['content'] %}{% if message['role'] == 'user' %}{{ '<|START_OF_TURN_TOKEN|><|USER_TOKEN|>' + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% elif message['role'] == 'assistant' %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>'  + content.strip() + '<|END_OF_TURN_TOKEN|>' }}{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}{% endif %}"""

T["qwen2"] = r"""{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system
You are a helpful assistant.<|im_end|>
' }}{% endif %}{{'<|im_start|>' + message['role'] + '
' + message['content'] + '<|im_end|>' + '
'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant
' }}{% endif %}"""

T["qwen25_tools"] = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0]['role'] == 'system' %}
        {{- messages[0]['content'] }}
    {%- else %}
        {{- 'You are Qwen, created by Alibaba Cloud. You are a helpful assistant.' }}
    {%- endif %}
    {{- "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0]['role'] == 'system' %}
        {{- '<|im_start|>system\n' + messages[0]['content'] + '<|im_end|>\n' }}
    {%- else %}
        {{- '<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- for message in messages %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
        {%- if message.content %}
            {{- '\n' + message.content }}
        {%- endif %}
        {%- for tool_call in message.tool_calls %}
            {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '\n<tool_call>\n{"name": "' }}
            {{- tool_call.name }}
            {{- '", "arguments": ' }}
            {{- tool_call.arguments | tojson }}
            {{- '}\n</tool_call>' }}
        {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- message.content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

T["llama2"] = r"""{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}"""

T["zephyr"] = r"""{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}"""

T["hermes_tools_macro"] = r"""{%- macro json_to_python_type(json_spec) %}
{%- set basic_type_map = {
    "string": "str",
    "number": "float",
    "integer": "int",
    "boolean": "bool"
} %}

{%- if basic_type_map[json_spec.type] is defined %}
    {{- basic_type_map[json_spec.type] }}
{%- elif json_spec.type == "array" %}
    {{- "list[" +  json_to_python_type(json_spec['items']) + "]"}}
{%- elif json_spec.type == "object" %}
    {%- if json_spec.additionalProperties is defined %}
        {{- "dict[str, " + json_to_python_type(json_spec.additionalProperties) + ']'}}
    {%- else %}
        {{- "dict" }}
    {%- endif %}
{%- elif json_spec.type is iterable %}
    {{- "Union[" }}
    {%- for t in json_spec.type %}
      {{- json_to_python_type({"type": t}) }}
      {%- if not loop.last %}
        {{- "," }}
    {%- endif %}
    {%- endfor %}
    {{- "]" }}
{%- else %}
    {{- "Any" }}
{%- endif %}
{%- endmacro %}

{{- bos_token }}
{%- if tools is defined and tools %}
{{- '<|im_start|>system\nYou are a function calling AI model. Here are the available tools: <tools> ' }}
{%- for tool in tools %}
    {%- if tool.function is defined %}
        {%- set tool = tool.function %}
    {%- endif %}
    {{- '{"type": "function", "function": ' }}
    {{- '{"name": "' + tool.name + '", ' }}
    {{- '"description": "' + tool.name + '(' }}
    {%- for param_name, param_fields in tool.parameters.properties|items %}
        {{- param_name + ": " + json_to_python_type(param_fields) }}
        {%- if not loop.last %}
            {{- ", " }}
        {%- endif %}
    {%- endfor %}
    {{- ")" }}
    {%- if tool.return is defined %}
        {{- " -> " + json_to_python_type(tool.return) }}
    {%- endif %}
    {{- " - " + tool.description + "\n\n" }}
    {{- '", "parameters": ' }}
    {%- if tool.parameters.properties | length == 0 %}
        {{- "{}" }}
    {%- else %}
        {{- tool.parameters|tojson }}
    {%- endif %}
    {{- "}" }}
    {%- if not loop.last %}
        {{- "\n" }}
    {%- endif %}
{%- endfor %}
{{- " </tools><|im_end|>\n" }}
{%- endif %}
{%- for message in messages %}
    {%- if message.role == "user" or message.role == "system" or (message.role == "assistant" and message.tool_calls is not defined) %}
        {{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {{- '<|im_start|>' + message.role }}
    {%- for tool_call in message.tool_calls %}
       {{- '\n<tool_call>\n' }}           {%- if tool_call.function is defined %}
                {%- set tool_call = tool_call.function %}
            {%- endif %}
            {{- '{' }}
            {{- '"name": "' }}
            {{- tool_call.name }}
            {{- '"' }}
            {{- ', '}}
            {%- if tool_call.arguments is defined %}
                {{- '"arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments|tojson }}
                {%- endif %}
            {%- endif %}
             {{- '}' }}
            {{- '\n</tool_call>' }}
    {%- endfor %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.previtem and loop.previtem.role != "tool" %}
            {{- '<|im_start|>tool\n' }}
        {%- endif %}
        {{- '<tool_response>\n' }}
        {{- message.content }}
        {%- if not loop.last %}
            {{- '\n</tool_response>\n' }}
        {%- else %}
            {{- '\n</tool_response>' }}
        {%- endif %}
        {%- if not loop.last and loop.nextitem.role != "tool" %}
            {{- '<|im_end|>' }}
        {%- elif loop.last %}
            {{- '<|im_end|>' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
{%- endif %}
"""

T["vicuna_features"] = r"""{#- a template exercising the rest of the supported language -#}
{%- set ns = namespace(count=0, roles=[]) -%}
{%- for m in messages if m.role != 'system' -%}
  {%- set ns.count = ns.count + 1 -%}
  {%- set ns.roles = ns.roles + [m.role] -%}
{%- endfor -%}
{%- macro turn(role, text, upper=false) -%}
{{ (role | upper if upper else role | capitalize) }}: {{ text }}
{%- endmacro -%}
{% set system = messages | selectattr('role', 'equalto', 'system') | map(attribute='content') | list %}
{% if system %}{{ system | first }}{{ '\n' }}{% endif %}
{% for m in messages[1:] if m.role != 'system' %}
{{ loop.index }}/{{ loop.length }}{{ ' first' if loop.first }}{{ ' last' if loop.last }}
{{ turn(m.role, m.content | default('(none)', true), upper=loop.index is even) }}
{% if m.content and m.content.startswith(('Tell', 'What')) %}[question of {{ m.content.split() | length }} words]{% endif %}
{% if m.content is string and 'joke' in m.content.lower() %}[joke]{% break %}{% endif %}
{% endfor %}
{{ ns.count }} turns: {{ ns.roles | join(',') }} / {{ ns.roles | unique | list | sort | join(' ') }}
{{ messages | length }}{{ '-' ~ (messages | map(attribute='role') | reject('equalto', 'user') | list | length) }}
{{ {'a': 1, 'b': [1, 2.5, none, true], 'c': "q\"x"} | tojson }} {{ [3, 1, 2] | sort(reverse=true) }}
{{ "%s" if false else 'x' }}{{ (7 // 2, 7 % 3, -7 // 2, 2 ** 10, 7 / 2) }} {{ 'abc'[::-1] }} {{ 'héllo'[1:3] }}
{{ messages[-1].role if messages else 'none' }} {{ messages[0].get('name', 'anon') }} {{ (messages[0].items() | list)[0] }}
{%+ if true %}  kept{% endif +%}
   {# comment #}
{%- set block %}[{{ 'Set' | lower }} block]{% endset %}{{ block }}
{{ '  a b  '.strip() }}|{{ 'x,y,,z'.split(',') }}|{{ 'Hello World'.replace('o', '0', 1) }}|{{ 'ab'.upper() ~ 'CD'.lower() ~ 'the end'.title() }}
{{ 3 in [1, 2, 3] and 'x' not in 'abc' }} {{ not none }} {{ 1 < 2 < 3 }} {{ [1] + [2] }} {{ 'x' * 3 }} {{ 10 - 2 * 3 }} {{ -3 | abs }}
{{ messages | length is number }} {{ none is none }} {{ {} is mapping }} {{ 'x' is iterable }} {{ undefined_thing is undefined }} {{ 1 is sameas 1 }}
{{ "%d" | length }} {{ 42 | string ~ '' }} {{ '12' | int + 1 }} {{ 'x' | int }} {{ [1, 2] | list | last }} {{ {'k': 'v'} | items | list }}
{{ 'a\tb\\n' }} {{ "it's" }} {{ ["it's", 'x'] }} {{ 1.5 }} {{ 1e-7 }} {{ 2.0 * 3 }} {{ True }} {{ none }}
{% for a, b in [(1, 'x'), (2, 'y')] %}{{ a }}={{ b }}{{ ', ' if not loop.last }}{% else %}empty{% endfor %}
{% for x in [] %}{{ x }}{% else %}no items{% endfor %}
{% for i in range(10) %}{% if i is odd %}{% continue %}{% endif %}{% if i > 6 %}{% break %}{% endif %}{{ i }}{% endfor %}
{{ messages[0] | tojson(indent=2) }}
{{- "\n" + ("  line1\nline2\n\nline4" | indent(2)) + "|" + ("a\nb" | indent(first=true)) }}
{% for m in messages %}{{ loop.cycle('odd', 'even') }} {% endfor %}{{ "%s/%d %%" % ('x', 2) }} {{ "{}:{name}".format(1, name='n') }}
{% if add_generation_prompt %}ASSISTANT:{% endif %}
"""

T["qwen3"] = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

T["mistral_nemo_tools"] = r"""{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- if not tools is defined %}
    {%- set tools = none %}
{%- endif %}
{%- set user_messages = loop_messages | selectattr("role", "equalto", "user") | list %}

{#- This block checks for alternating user/assistant messages, skipping tool calling messages #}
{%- set ns = namespace() %}
{%- set ns.index = 0 %}
{%- for message in loop_messages %}
    {%- if not (message.role == "tool" or message.role == "tool_results" or (message.tool_calls is defined and message.tool_calls is not none)) %}
        {%- if (message["role"] == "user") != (ns.index % 2 == 0) %}
            {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
        {%- endif %}
        {%- set ns.index = ns.index + 1 %}
    {%- endif %}
{%- endfor %}

{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if tools is not none and (message == user_messages[-1]) %}
            {{- "[AVAILABLE_TOOLS][" }}
            {%- for tool in tools %}
                {%- set tool = tool.function %}
                {{- '{"type": "function", "function": {' }}
                {%- for key, val in tool.items() if key != "return" %}
                    {%- if val is string %}
                        {{- '"' + key + '": "' + val + '"' }}
                    {%- else %}
                        {{- '"' + key + '": ' + val|tojson }}
                    {%- endif %}
                    {%- if not loop.last %}
                        {{- ", " }}
                    {%- endif %}
                {%- endfor %}
                {{- "}}" }}
                {%- if not loop.last %}
                    {{- ", " }}
                {%- else %}
                    {{- "]" }}
                {%- endif %}
            {%- endfor %}
            {{- "[/AVAILABLE_TOOLS]" }}
            {%- endif %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST]" + system_message + "\n\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST]" + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif (message.tool_calls is defined and message.tool_calls is not none) %}
        {{- "[TOOL_CALLS][" }}
        {%- for tool_call in message.tool_calls %}
            {%- set out = tool_call.function|tojson %}
            {{- out[:-1] }}
            {%- if not tool_call.id is defined or tool_call.id|length != 9 %}
                {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
            {%- endif %}
            {{- ', "id": "' + tool_call.id + '"}' }}
            {%- if not loop.last %}
                {{- ", " }}
            {%- else %}
                {{- "]" + eos_token }}
            {%- endif %}
        {%- endfor %}
    {%- elif message["role"] == "assistant" %}
        {{- message["content"] + eos_token}}
    {%- elif message["role"] == "tool_results" or message["role"] == "tool" %}
        {%- if message.content is defined and message.content.content is defined %}
            {%- set content = message.content.content %}
        {%- else %}
            {%- set content = message.content %}
        {%- endif %}
        {{- '[TOOL_RESULTS]{"content": ' + content|string + ", " }}
        {%- if not message.tool_call_id is defined or message.tool_call_id|length != 9 %}
            {{- raise_exception("Tool call IDs should be alphanumeric strings with length 9!") }}
        {%- endif %}
        {{- '"call_id": "' + message.tool_call_id + '"}[/TOOL_RESULTS]' }}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

T["llama32_date"] = r"""{{- bos_token }}
{%- if not date_string is defined %}
    {%- if strftime_now is defined %}
        {%- set date_string = strftime_now("%d %b %Y") %}
    {%- else %}
        {%- set date_string = "26 Jul 2024" %}
    {%- endif %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\n\n" }}
{{- "Cutting Knowledge Date: December 2023\n" }}
{{- "Today Date: " + date_string + "\n\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\n\n' }}
{%- endif %}"""

T["edge_semantics"] = r"""{%- if true %}  a  {% endif -%}  
	{% if true %}tab-indented{% endif %}
{{ '%}' }} {{ '}}' }} {# a %} b }} #}x { } }
{{ {'a': 1, 'b': 2,} }} {{ [1, 2,] }} {{ (1, 2,) }}
{% for k in {'x': 1, 'y': 2} %}{{ k }}{% endfor %} {{ [[1, 2]].0.1 }}
{{ not 1 == 2 }} {{ -2 ** 2 }} {{ 2 ** -1 }} {{ 1 if true }}
{{ [1,2,3][1:] | join(',') }} {{ "abc" is string and "a" in "abc" }} {{ [1, 2] | length > 1 }}
{{ range(3) | list }} {{ range(1, 10, 3) | join(',') }} {{ range(5, 0, -2) | list }}
{{ 10 / 4 }} {{ 1 / 3 }} {{ 1e20 }} {{ 12345678901234567890.0 }} {{ 0.1 * 3 }} {{ 1e16 }} {{ 123456789012345.6 }}
{{ none | string }} {{ true | int }} {{ '0x1A' | int }} {{ ' 42 ' | int }} {{ '-3' | int }} {{ 4.0 | int }}
{{ '  ' | trim | length }} {% for c in 'ab' %}[{{ c }}]{% endfor %}
{%- set x = 1 -%}
   value {{ x }}
{{- '\n' -}}
  end
{{ "x" ~ 1.0 ~ none ~ [1] ~ {'a': none} }}
{{ [true, false, none] | tojson }} {{ 'é"\t' | tojson }} {{ 3.0 | tojson }} {{ 1e-7 | tojson }}
{{ ['b', 'a', 'C'] | sort | join }} {{ ['b', 'a', 'C'] | sort(case_sensitive=true) | join }} {{ [3, 1] | max }}
{{ 'Hello World' | lower | title }} {{ 'x' | center }} {{ '' | first }} {{ [] | last is undefined }}
{{ messages | map(attribute='role') | join(', ') }} {{ messages[0] | items | list }}
{% if messages[0].content is defined and messages[0].content %}yes{% endif %}
{{ messages | selectattr('role', 'in', ['user', 'x']) | list | length }} {{ 5 is in [5] }}
{{ 'a-b_c d' | title }} {{ 'ABC'.lower().capitalize() }} {{ "O'Neil" | capitalize }}
{% macro m(a, b=2) -%}
  {{ a }}/{{ b }}
{%- endmacro %}
[{{ m(1) }}] [{{ m(b=3, a=4) }}]
{{ loop is defined }} {% for i in [1] %}{{ loop.index is number }}{% endfor %}
{{ 'a' < 'b' and 2 >= 2.0 and [1, 2] < [1, 3] }} {{ (1, 2) == [1, 2] }}
{{ dict(a=1, b='x') | tojson }} {{ namespace(a=1).a }}
{{ "line1\nline2" | indent(4, true) }}
{{ 'abc'[5:] }}|{{ 'abc'[-10:2] }}|{{ [1,2,3][::2] }}|{{ [1,2,3][-1::-2] }}
{{ 7 // -2 }} {{ -7 % -3 }} {{ 7.5 // 2 }} {{ -7.5 % 2 }} {{ 2 ** 0.5 }}
"""

MESSAGES = {
    "user": [{"role": "user", "content": "Hello!"}],
    "sys_user": [{"role": "system", "content": "  You are a helpful assistant. "},
                 {"role": "user", "content": "What is 2+2?"}],
    "multi": [{"role": "user", "content": "Hi"},
              {"role": "assistant", "content": " Hello! How can I help? "},
              {"role": "user", "content": "Tell me a joke.\nA short one."}],
    "sys_multi": [{"role": "system", "content": "Be brief."},
                  {"role": "user", "content": "Tell me a joke"},
                  {"role": "assistant", "content": "Why did the chicken cross the road?"},
                  {"role": "user", "content": "Why? Ünïcödé \u2603 \"quoted\" and \\backslash"}],
    "bad_order": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}],
    "tools": [{"role": "user", "content": "Weather in Paris?"},
              {"role": "assistant", "content": None, "tool_calls": [
                  {"type": "function", "function": {"name": "get_weather",
                                                    "arguments": {"city": "Paris"}}}]},
              {"role": "tool", "content": "{\"temp\": 21}"},
              {"role": "assistant", "content": "It is 21 degrees."},
              {"role": "user", "content": "Thanks"}],
    "tools_ids": [{"role": "user", "content": "Weather in Paris?"},
                  {"role": "assistant", "content": None, "tool_calls": [
                      {"id": "abcDEF123", "type": "function",
                       "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]},
                  {"role": "tool", "tool_call_id": "abcDEF123", "content": "{\"temp\": 21}"},
                  {"role": "assistant", "content": "<think>\nsunny\n</think>\n\nIt is 21."},
                  {"role": "user", "content": "Thanks"}],
}

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the weather",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "City"},
        "days": {"type": "integer"},
        "units": {"type": ["string", "null"]},
        "hours": {"type": "array", "items": {"type": "number"}}},
        "required": ["city"]}}}]


TOOLS_NO_UNION = json.loads(json.dumps(TOOLS))
TOOLS_NO_UNION[0]["function"]["parameters"]["properties"]["units"]["type"] = "string"
TOOLS_NO_UNION.append({"type": "function", "function": {
    "name": "now", "description": "Current time", "return": {"type": "string"},
    "parameters": {"type": "object", "properties": {}}}})


def run(*args, timeout=120):
    return subprocess.run([MODEL, *args], capture_output=True, timeout=timeout)


class TemplateInterop(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.models = {}
        for name, src in T.items():
            tf = os.path.join(cls.tmp.name, name + ".jinja")
            with open(tf, "w", encoding="utf-8") as f:
                f.write(src)
            gguf = os.path.join(cls.tmp.name, name + ".gguf")
            r = run("init-tiny", gguf, "--dim", "32", "--layers", "1", "--heads", "2",
                    "--kv-heads", "1", "--ff", "64", "--chat-template", tf)
            assert r.returncode == 0, r.stderr
            cls.models[name] = gguf

    @classmethod
    def tearDownClass(cls):
        cls.tmp.cleanup()

    def render(self, name, messages, gen, tools=None):
        args = ["chat-template", "--model", self.models[name], "--messages",
                json.dumps(messages)]
        if not gen:
            args.append("--no-generation-prompt")
        if tools is not None:
            args += ["--tools", json.dumps(tools)]
        r = run(*args)
        self.assertNotIn(b"does not parse", r.stderr)
        if r.returncode == 0:
            return True, r.stdout.decode("utf-8")
        self.assertEqual(r.returncode, 1, r.stderr)
        return False, r.stderr.decode("utf-8")

    def check(self, name, msgs_name, gen, tools=None):
        messages = MESSAGES[msgs_name]
        with self.subTest(template=name, messages=msgs_name, gen=gen, tools=tools is not None):
            want_ok, want = reference(T[name], messages, gen, tools)
            got_ok, got = self.render(name, messages, gen, tools)
            if want_ok:
                self.assertTrue(got_ok, got)
                self.assertEqual(got, want)
            else:
                self.assertFalse(got_ok, "sgpu rendered where jinja2 raised: %r" % got)
                self.assertIn(want if want is not None else "chat template", got)
        return want_ok

    def test_families(self):
        rendered = 0
        for name in T:
            for msgs_name in MESSAGES:
                for gen in (True, False):
                    rendered += self.check(name, msgs_name, gen)
        # most combinations render (the rest raise on purpose, e.g. Gemma's system role)
        self.assertGreater(rendered, len(T) * len(MESSAGES))

    def test_tools(self):
        for name in ("llama31", "qwen25_tools", "hermes_tools_macro", "qwen3",
                     "mistral_nemo_tools"):
            for msgs_name in ("user", "sys_user", "tools", "tools_ids"):
                for tools in (TOOLS, TOOLS_NO_UNION):
                    # the Hermes macro recurses forever on a union type (it iterates the
                    # string "null"): jinja2 hits RecursionError, sgpu its depth bound
                    self.check(name, msgs_name, True, tools)

    def test_content_parts(self):
        parts = [{"role": "user", "content": [{"type": "text", "text": "Describe "},
                                              {"type": "text", "text": "this."}]}]
        joined = [{"role": "user", "content": "Describe this."}]
        # Gemma 3 renders parts itself: they reach it as they are (HF's behaviour)
        self.assertEqual(self.render("gemma3", parts, True),
                         reference(T["gemma3"], parts, True))
        # a string-only template gets the texts joined (not a printed Python list)
        for name in ("llama3", "qwen2", "mistral_v1"):
            self.assertEqual(self.render(name, parts, True), reference(T[name], joined, True))

    def test_long_conversation_from_file(self):
        msgs = []
        for i in range(500):
            msgs.append({"role": "user", "content": "question %d " % i * 20})
            msgs.append({"role": "assistant", "content": "<think>t%d</think>answer " % i * 10})
        path = os.path.join(self.tmp.name, "long.json")
        with open(path, "w") as f:
            json.dump(msgs, f)
        for name in ("qwen3", "llama3", "vicuna_features"):
            r = run("chat-template", "--model", self.models[name], "--messages", "@" + path)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout.decode(), reference(T[name], msgs, True)[1])

    def test_raise_exception_message(self):
        ok, err = self.render("mistral_v1", MESSAGES["bad_order"], True)
        self.assertFalse(ok)
        self.assertIn("Conversation roles must alternate user/assistant/user/assistant/...", err)

    def test_hostile_templates_fail_cleanly(self):
        cases = {
            "nesting": "{% if true %}" * 300 + "x" + "{% endif %}" * 300,
            "parens": "{{ " + "(" * 500 + "1" + ")" * 500 + " }}",
            "loop": "{% for i in range(1000000) %}{% for j in range(1000000) %}x{% endfor %}"
                    "{% endfor %}",
            "recursion": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "output": "{% set s = 'x' * 100000 %}{% for i in range(100000) %}{{ s }}{% endfor %}",
            "memory": "{% set ns = namespace(l=[1]) %}{% for i in range(60) %}"
                      "{% set ns.l = ns.l + ns.l %}{% endfor %}{{ ns.l | length }}",
            "syntax": "{% for %}",
            "unknown_tag": "{% include 'x' %}",
            "unclosed": "{% if true %}never closed",
            "type_error": "{{ 1 + 'a' }}",
            "undefined_attr": "{{ nothing.here }}",
        }
        for name, src in cases.items():
            with self.subTest(case=name):
                tf = os.path.join(self.tmp.name, "hostile.jinja")
                with open(tf, "w") as f:
                    f.write(src)
                t0 = time.monotonic()
                r = run("chat-template", "--template", tf, "--messages",
                        json.dumps(MESSAGES["user"]), timeout=300)
                err = r.stderr.decode()
                self.assertGreater(len(err), 0)
                if name in ("nesting", "parens", "syntax", "unknown_tag", "unclosed"):
                    # a template that does not parse falls back to ChatML, with the reason
                    self.assertEqual(r.returncode, 0, err)
                    self.assertIn("does not parse", err)
                    self.assertTrue(r.stdout.startswith(b"<|im_start|>user\nHello!"))
                else:
                    self.assertEqual(r.returncode, 1, err)
                    self.assertIn("chat template", err)
                del t0


class TemplateServer(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.TemporaryDirectory()
        cls.gguf = {}
        for name in ("llama3", "mistral_v1"):
            tf = os.path.join(cls.tmp.name, name + ".jinja")
            with open(tf, "w", encoding="utf-8") as f:
                f.write(T[name])
            cls.gguf[name] = os.path.join(cls.tmp.name, name + ".gguf")
            r = run("init-tiny", cls.gguf[name], "--chat-template", tf)
            assert r.returncode == 0, r.stderr
        err_t = os.path.join(cls.tmp.name, "err.jinja")
        with open(err_t, "w") as f:
            f.write("{{ messages[0].content + 1 }}")
        cls.gguf["err"] = os.path.join(cls.tmp.name, "err.gguf")
        assert run("init-tiny", cls.gguf["err"], "--chat-template", err_t).returncode == 0
        cls.s = Server("--model", cls.gguf["llama3"], "--threads", "2")
        cls.m = Server("--model", cls.gguf["mistral_v1"], "--threads", "2")
        cls.e = Server("--model", cls.gguf["err"], "--threads", "2")

    @classmethod
    def tearDownClass(cls):
        for s in (cls.s, cls.m, cls.e):
            s.stop()
        cls.tmp.cleanup()

    def test_apply_template_matches_jinja2(self):
        for msgs_name in ("user", "sys_user", "multi", "sys_multi"):
            for gen in (True, False, None):
                body = {"messages": MESSAGES[msgs_name]}
                if gen is not None:
                    body["add_generation_prompt"] = gen
                st, out = self.s.json("POST", "/apply-template", body)
                self.assertEqual(st, 200, out)
                _, want = reference(T["llama3"], MESSAGES[msgs_name], gen is not False)
                self.assertEqual(out["prompt"], want)
        self.assertTrue(any("event=chat_template" in l and "kind=jinja" in l
                            for l in self.s.lines))

    def test_chat_completion_tokenizes_the_rendering(self):
        msgs = MESSAGES["sys_user"]
        _, want = reference(T["llama3"], msgs, True)
        self.assertTrue(want.startswith(BOS))
        # BOS written by the template is the BOS token (not added twice); the rest is text
        r = run("tokenize", "--model", self.gguf["llama3"], "--text", want[len(BOS):])
        self.assertEqual(r.returncode, 0, r.stderr)
        n_text = len(r.stdout.split())
        st, out = self.s.json("POST", "/v1/chat/completions",
                              {"messages": msgs, "max_tokens": 1, "temperature": 0})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["usage"]["prompt_tokens"], 1 + n_text)

    def test_raise_exception_is_400(self):
        st, out = self.m.json("POST", "/apply-template", {"messages": MESSAGES["bad_order"]})
        self.assertEqual(st, 400, out)
        self.assertIn("Conversation roles must alternate", out["error"]["message"])
        st, out = self.m.json("POST", "/v1/chat/completions",
                              {"messages": MESSAGES["bad_order"], "max_tokens": 1})
        self.assertEqual(st, 400, out)
        self.assertIn("Conversation roles must alternate", out["error"]["message"])
        st, out = self.m.json("POST", "/apply-template", {"messages": MESSAGES["multi"]})
        self.assertEqual(st, 200, out)
        self.assertEqual(out["prompt"], reference(T["mistral_v1"], MESSAGES["multi"], True)[1])

    def test_template_runtime_error_is_500_json(self):
        for path in ("/apply-template", "/v1/chat/completions"):
            st, out = self.e.json("POST", path, {"messages": MESSAGES["user"], "max_tokens": 1})
            self.assertEqual(st, 500, out)
            self.assertEqual(out["error"]["code"], "chat_template_error")
            self.assertIn("unsupported operand", out["error"]["message"])
        st, _ = self.e.json("GET", "/health")
        self.assertEqual(st, 200)

    def test_bad_requests(self):
        for body in ({}, {"messages": []}, {"messages": [{"content": "x"}]},
                     {"messages": [{"role": "user", "content": 5}]},
                     {"messages": MESSAGES["user"], "add_generation_prompt": "yes"}):
            st, out = self.s.json("POST", "/apply-template", body)
            self.assertEqual(st, 400, (body, out))
            self.assertIn("message", out["error"])
        st, _, _ = self.s.request("GET", "/apply-template")
        self.assertEqual(st, 405)

    def test_embedded_model_uses_chatml(self):
        r = run("chat-template", "--messages", json.dumps(MESSAGES["sys_user"]))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.decode(),
                         "<|im_start|>system\n  You are a helpful assistant. <|im_end|>\n"
                         "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n")


if __name__ == "__main__":
    unittest.main()
