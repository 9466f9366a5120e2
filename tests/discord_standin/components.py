"""Modals and string selects as Discord checks and sends them: limits of a modal a bot opens, and the data of a
modal submit (interaction type 5) or a select (type 3, component_type 3) a user sends back.

Limits from Discord's API reference (Interactions: Modal; Components: Text Input, Label, String Select)."""

from __future__ import annotations

from typing import Any

from .interactions import StandinError

MODAL_TITLE_MAX = 45
CUSTOM_ID_MAX = 100
MODAL_COMPONENTS_MAX = 5
LABEL_MAX = 45
LABEL_DESCRIPTION_MAX = 100
TEXT_VALUE_MAX = 4000
PLACEHOLDER_MAX = 100
SELECT_OPTIONS_MAX = 25
ACTION_ROW, BUTTON, STRING_SELECT, TEXT_INPUT, LABEL = 1, 2, 3, 4, 18


class FormError(Exception):
    """A field of a bot's payload breaks a Discord limit; the server turns it into 400 Invalid Form Body."""

    def __init__(self, field: str, message: str, code: str = "BASE_TYPE_MAX_LENGTH") -> None:
        super().__init__(f"{field}: {message}")
        self.field, self.message, self.code = field, message, code


def _length(field: str, value: Any, low: int, high: int) -> None:
    if not isinstance(value, str) or not low <= len(value) <= high:
        raise FormError(field, f"Must be between {low} and {high} in length.")


def check_modal(data: dict[str, Any]) -> None:
    """Raise FormError where the modal a bot opens (callback type 9) breaks Discord's rules."""
    _length("data.custom_id", data.get("custom_id"), 1, CUSTOM_ID_MAX)
    _length("data.title", data.get("title"), 1, MODAL_TITLE_MAX)
    components = data.get("components") or []
    if not 1 <= len(components) <= MODAL_COMPONENTS_MAX:
        raise FormError("data.components", f"Must be between 1 and {MODAL_COMPONENTS_MAX} in length.")
    seen: set[str] = set()
    for n, component in enumerate(components):
        where = f"data.components.{n}"
        if component.get("type") == ACTION_ROW:  # the older form: one text input per row, with its own label
            inner = component.get("components") or []
            if len(inner) != 1 or inner[0].get("type") != TEXT_INPUT:
                raise FormError(where, "An action row in a modal holds exactly one text input.", "COMPONENT_TYPE")
            _length(f"{where}.components.0.label", inner[0].get("label"), 1, LABEL_MAX)
            _check_text_input(f"{where}.components.0", inner[0], seen)
        elif component.get("type") == LABEL:
            _length(f"{where}.label", component.get("label"), 1, LABEL_MAX)
            if component.get("description") is not None:
                _length(f"{where}.description", component["description"], 1, LABEL_DESCRIPTION_MAX)
            inner = component.get("component") or {}
            if inner.get("type") == TEXT_INPUT:
                _check_text_input(f"{where}.component", inner, seen)
            elif inner.get("type") == STRING_SELECT:
                check_select(f"{where}.component", inner)
                seen.add(inner["custom_id"])
            else:
                raise FormError(f"{where}.component", "A label holds a text input or a select.", "COMPONENT_TYPE")
        else:
            raise FormError(where, "A modal holds labels (or action rows of one text input).", "COMPONENT_TYPE")


def _check_text_input(where: str, text: dict[str, Any], seen: set[str]) -> None:
    custom_id = text.get("custom_id")
    _length(f"{where}.custom_id", custom_id, 1, CUSTOM_ID_MAX)
    if custom_id in seen:
        raise FormError(f"{where}.custom_id", "Component custom id cannot be duplicated",
                        "COMPONENT_CUSTOM_ID_DUPLICATED")
    seen.add(custom_id)
    if text.get("style") not in (1, 2):
        raise FormError(f"{where}.style", "Value must be one of (1, 2).", "BASE_TYPE_CHOICES")
    low, high = text.get("min_length"), text.get("max_length")
    if low is not None and not 0 <= low <= TEXT_VALUE_MAX:
        raise FormError(f"{where}.min_length", f"int value should be between 0 and {TEXT_VALUE_MAX}.")
    if high is not None and not 1 <= high <= TEXT_VALUE_MAX:
        raise FormError(f"{where}.max_length", f"int value should be between 1 and {TEXT_VALUE_MAX}.")
    if text.get("placeholder") is not None:
        _length(f"{where}.placeholder", text["placeholder"], 0, PLACEHOLDER_MAX)
    if text.get("value") is not None:
        _length(f"{where}.value", text["value"], 0, min(high or TEXT_VALUE_MAX, TEXT_VALUE_MAX))


def check_select(where: str, select: dict[str, Any]) -> None:
    _length(f"{where}.custom_id", select.get("custom_id"), 1, CUSTOM_ID_MAX)
    options = select.get("options") or []
    if not 1 <= len(options) <= SELECT_OPTIONS_MAX:
        raise FormError(f"{where}.options", f"Must be between 1 and {SELECT_OPTIONS_MAX} in length.")
    values = [o.get("value") for o in options]
    if len(set(values)) != len(values):
        raise FormError(f"{where}.options", "Select option values must be unique.",
                        "SELECT_COMPONENT_OPTION_VALUE_DUPLICATED")
    for n, option in enumerate(options):
        _length(f"{where}.options.{n}.label", option.get("label"), 1, 100)
        _length(f"{where}.options.{n}.value", option.get("value"), 1, 100)


def text_inputs(modal: dict[str, Any]) -> list[dict[str, Any]]:
    """The modal's text inputs, in order, in either of the two layouts."""
    found = []
    for component in modal.get("components") or []:
        if component.get("type") == ACTION_ROW:
            found += [c for c in component.get("components") or [] if c.get("type") == TEXT_INPUT]
        elif component.get("type") == LABEL and (component.get("component") or {}).get("type") == TEXT_INPUT:
            found.append(component["component"])
    return found


def modal_submit_data(modal: dict[str, Any], values: dict[str, str]) -> dict[str, Any]:
    """What Discord sends for a submitted modal: its custom_id and each input's value, in the modal's layout.

    `values` maps a text input's custom_id to what the user typed; an input not named keeps its pre-filled value.
    The client enforces required and min/max length before it lets the user submit, so breaking them is a
    StandinError (a user can't send that)."""
    inputs = {text["custom_id"]: text for text in text_inputs(modal)}
    unknown = set(values) - set(inputs)
    if unknown:
        raise StandinError(f"the modal {modal.get('title')!r} has no text input {sorted(unknown)};"
                           f" it has {list(inputs)}")
    typed: dict[str, str] = {}
    for custom_id, text in inputs.items():
        value = values.get(custom_id, text.get("value") or "")
        low, high = text.get("min_length") or 0, text.get("max_length") or TEXT_VALUE_MAX
        if text.get("required", True) and not value:
            raise StandinError(f"text input {custom_id!r} is required; Discord's client won't submit it empty")
        if value and not low <= len(value) <= high:
            raise StandinError(f"text input {custom_id!r} takes {low}..{high} characters, got {len(value)}")
        typed[custom_id] = value

    def submitted(text: dict[str, Any]) -> dict[str, Any]:
        entry = {"type": TEXT_INPUT, "custom_id": text["custom_id"], "value": typed[text["custom_id"]]}
        return entry | ({"id": text["id"]} if "id" in text else {})

    components = []
    for component in modal.get("components") or []:
        if component.get("type") == ACTION_ROW:
            components.append({"type": ACTION_ROW, "components": [submitted(c) for c in component["components"]]})
        elif component.get("type") == LABEL and component["component"].get("type") == TEXT_INPUT:
            components.append({"type": LABEL, "component": submitted(component["component"])}
                              | ({"id": component["id"]} if "id" in component else {}))
    return {"custom_id": modal["custom_id"], "components": components}


def select_data(select: dict[str, Any], values: list[str]) -> dict[str, Any]:
    """What Discord sends when a user picks `values` in a string select; only its options can be picked."""
    offered = [o["value"] for o in select.get("options") or []]
    low, high = select.get("min_values", 1), select.get("max_values", 1)
    if not low <= len(values) <= high or any(v not in offered for v in values):
        raise StandinError(f"select {select['custom_id']!r} takes {low}..{high} of {offered}; got {values}")
    data = {"custom_id": select["custom_id"], "component_type": STRING_SELECT, "values": list(values)}
    return data | ({"id": select["id"]} if "id" in select else {})
