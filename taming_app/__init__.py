"""The Gradio app over taming_core, by concern: models.py (the models behind the tabs, Stop per session),
refused.py (refusals in words), uploads.py (uploads and canvases -> arrays; the upload quota), files.py (images
sent to the page as files written once), settings.py (the arguments and
their limits), handlers.py (one handler per mode, also the API's), page.py (the page's own handlers),
scenes.py (ready-made label maps, legend, swatch names), layout.py (the page; app.css, swatch_names.js,
margin_strokes.js), api.py (the public endpoints). app.py is the command line that serves it."""
from .handlers import App, tiled, untiled
from .layout import build_demo, page_css
from .models import CONDITION_KINDS_BY_MODE, MODES, SEGMENTER, ModelBank, Stops
from .page import Page, for_page
from .refused import Refused
from .scenes import BLANK, UPLOADED, example_maps, legend_html, swatch_script
from .settings import FIT, GUIDANCE, GUIDANCE_BY_MODE, LIMITS, MAX_SCALE, Settings
from .uploads import MAX_UPLOAD_BYTES, MAX_UPLOAD_PIXELS, flatten_editor, label_map_of, read_upload

__all__ = [
    "App", "tiled", "untiled", "build_demo", "page_css", "CONDITION_KINDS_BY_MODE", "MODES", "SEGMENTER",
    "ModelBank", "Stops", "Page", "for_page", "Refused", "BLANK", "UPLOADED", "example_maps", "legend_html",
    "swatch_script", "FIT", "GUIDANCE", "GUIDANCE_BY_MODE", "LIMITS", "MAX_SCALE", "Settings", "MAX_UPLOAD_BYTES",
    "MAX_UPLOAD_PIXELS", "flatten_editor", "label_map_of", "read_upload",
]
