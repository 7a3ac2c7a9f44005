"""QGIS desktop: offer to set up the engine (torch, spectral) when it is missing.

Where and when (the least annoying places that still reach a new user):
- once at start-up, a message-bar line with a button that opens "Set up the HyperNet engine"; "Not now" stops the
  start-up line for good (the setting ``hypernet/engine_prompt``), closing it (x) only for this session. Users who
  only run the classic methods, which need no engine, answer once and are never asked again;
- whenever Train HyperNet or Detect Change is refused for want of the engine (their dialogs, batch, models), the
  same line again, beside the dialog's one-line refusal: the user has just asked for the engine's work;
- the plugin's own menu action ("HyperNet change detection...") opens the set-up dialog instead of Detect Change,
  with the line saying why.

The check looks the packages up (engine_setup.missing_packages: importlib.util.find_spec), never imports torch and
never touches the network. Nothing here runs without a QGIS main window (qgis_process, tests without iface).
"""

from __future__ import annotations

from qgis.core import QgsApplication, QgsSettings

from . import engine_setup
from .qgis_compat import MESSAGE_INFO

SETUP_ID = "hypernet:setupengine"
SETTING = "hypernet/engine_prompt"  # "never": no start-up line
OBJECT_NAME = "hypernetEnginePrompt"
TITLE = "HyperNet"
TEXT = "Train HyperNet and Detect Change need the HyperNet engine (PyTorch), not yet installed for this QGIS."


def engine_missing() -> list[str]:
    """torch/spectral not found for this QGIS's Python (the private engine folder counted)."""
    return engine_setup.missing_packages(QgsApplication.qgisSettingsDirPath())


def open_setup_dialog() -> None:
    """The dialog of Set up the HyperNet engine."""
    import processing

    processing.execAlgorithmDialog(SETUP_ID, {})


def _main_iface():
    try:
        from qgis.utils import iface
    except ImportError:
        return None
    return iface if iface is not None and hasattr(iface, "messageBar") else None


def current_prompt():
    """The prompt's message-bar item while it is on the bar, else None."""
    iface = _main_iface()
    if iface is None:
        return None
    bar = iface.messageBar()
    if hasattr(bar, "items"):  # QGIS 3.14+: the items on the bar (popped ones may await deletion as children)
        return next((item for item in bar.items() if item.objectName() == OBJECT_NAME), None)
    from qgis.PyQt.QtWidgets import QWidget

    item = bar.findChild(QWidget, OBJECT_NAME)
    return item if item is not None and item.isVisible() else None


class _Prompt:
    """The shown line's buttons' slots (bound methods of an object this module keeps: Qt holds no reference)."""

    def __init__(self, bar, item) -> None:
        self.bar, self.item = bar, item

    def set_up(self) -> None:
        from qgis.PyQt.QtCore import QTimer

        QTimer.singleShot(0, self.pop_then_set_up)  # after this slot: popping deletes this button; modal dialog

    def not_now(self) -> None:
        from qgis.PyQt.QtCore import QTimer

        QgsSettings().setValue(SETTING, "never")
        QTimer.singleShot(0, self.pop)

    def pop(self) -> None:
        try:
            self.bar.popWidget(self.item)
        except RuntimeError:  # already gone (closed, or the bar cleared)
            pass

    def pop_then_set_up(self) -> None:
        self.pop()
        open_setup_dialog()


_shown: list[_Prompt] = []


def offer_setup(text: str = TEXT, at_start: bool = False) -> bool:
    """Show the message-bar line with "Set up the engine..." (and "Not now" at start-up). Returns whether it is
    shown (False without a main window, or at start-up after "Not now")."""
    iface = _main_iface()
    if iface is None:
        return False
    if at_start and QgsSettings().value(SETTING, "") == "never":
        return False
    if current_prompt() is not None:
        return True
    from qgis.PyQt.QtWidgets import QPushButton

    bar = iface.messageBar()
    item = bar.createMessage(TITLE, text)
    item.setObjectName(OBJECT_NAME)
    prompt = _Prompt(bar, item)
    _shown[:] = [prompt]
    setup = QPushButton("Set up the engine...")
    setup.setObjectName("hypernetEngineSetupButton")
    setup.clicked.connect(prompt.set_up)
    item.layout().addWidget(setup)
    if at_start:
        later = QPushButton("Not now")
        later.setObjectName("hypernetEngineLaterButton")
        later.setToolTip(
            "Do not show this at start-up again; Train HyperNet and Detect Change still say how to set "
            "up the engine when they need it."
        )
        later.clicked.connect(prompt.not_now)
        item.layout().addWidget(later)
    bar.pushWidget(item, MESSAGE_INFO)
    return True


def offer_setup_soon(text: str = TEXT) -> None:
    """offer_setup() from the main thread's event loop (safe to call from a dialog's parameter check)."""
    if _main_iface() is None:
        return
    from qgis.PyQt.QtCore import QTimer

    QTimer.singleShot(0, lambda: offer_setup(text))
