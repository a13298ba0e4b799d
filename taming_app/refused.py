"""Refusals: what the app says, in words, when an upload or an argument cannot be used."""
from __future__ import annotations

import contextlib
import logging

import gradio as gr

import taming_core as tc

log = logging.getLogger("app")


class Refused(gr.Error):
    """An expected refusal (a bad upload or argument): shown to the user until closed (a message that fades
    leaves a visitor with a bare "Error"), logged as one line, no traceback."""

    def __init__(self, message: str):
        super().__init__(message, duration=None, title="Not accepted", print_exception=False)
        log.warning("refused: %s", message)


@contextlib.contextmanager
def refusing():
    """Turns the library's refusals of a map (tc.condition_maps.MapError) into Refused, in the same words."""
    try:
        yield
    except tc.condition_maps.MapError as e:
        raise Refused(str(e)) from None
