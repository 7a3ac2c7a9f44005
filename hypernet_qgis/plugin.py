"""The QGIS plugin: Processing provider (also without a GUI, e.g. qgis_process) and a menu/toolbar entry."""

from __future__ import annotations

from qgis.core import QgsApplication

from .algorithms.base import PROVIDER_ID
from .resources import icon

MENU = "&HyperNet"
ACTION_TEXT = "HyperNet change detection..."
DETECT_ID = f"{PROVIDER_ID}:detectchange"


class HyperNetPlugin:
    """Registers the ``hypernet`` provider in initProcessing() and adds an action opening Detect Change."""

    def __init__(self, iface) -> None:
        self.iface = iface
        self.provider = None
        self.action = None

    def initProcessing(self) -> None:  # noqa: N802
        """Called by QGIS (desktop and qgis_process) before initGui; registers the provider once."""
        if self.provider is not None:
            return
        from .provider import HyperNetProvider

        self.provider = HyperNetProvider()
        QgsApplication.processingRegistry().addProvider(self.provider)

    def initGui(self) -> None:  # noqa: N802
        try:  # Qt6 (QGIS 4) moved QAction to QtGui; Qt5 has it in QtWidgets
            from qgis.PyQt.QtGui import QAction
        except ImportError:
            from qgis.PyQt.QtWidgets import QAction

        self.initProcessing()
        if self.iface is None:
            return
        self.action = QAction(icon("hypernet.svg"), ACTION_TEXT, self.iface.mainWindow())
        self.action.setObjectName("hypernetDetectChangeAction")
        self.action.setToolTip("Detect change between two dates with HyperNet (Processing dialog)")
        self.action.triggered.connect(self.open_detect_dialog)
        self.iface.addPluginToRasterMenu(MENU, self.action)
        self.iface.addRasterToolBarIcon(self.action)
        self.offer_engine_setup()

    def offer_engine_setup(self) -> bool:
        """At start-up, when torch or spectral is missing: a message-bar line offering the set-up (engine_prompt.py
        says where and why). Looks the packages up without importing them; no network. True when shown."""
        from . import engine_prompt

        try:
            missing = engine_prompt.engine_missing()
        except Exception:  # noqa: BLE001  (a start-up check must never stop QGIS from starting)
            return False
        return bool(missing) and engine_prompt.offer_setup(at_start=True)

    def open_detect_dialog(self) -> None:
        """Open the Processing dialog of Detect Change; without the engine, the set-up dialog (and the reason)."""
        import processing

        from . import engine_prompt

        if engine_prompt.engine_missing():
            engine_prompt.offer_setup("Detect Change needs the HyperNet engine (PyTorch): set it up first, once.")
            engine_prompt.open_setup_dialog()
            return
        processing.execAlgorithmDialog(DETECT_ID, {})

    def unload(self) -> None:
        if self.action is not None and self.iface is not None:
            self.iface.removePluginRasterMenu(MENU, self.action)
            self.iface.removeRasterToolBarIcon(self.action)
            self.action.deleteLater()
        self.action = None
        if self.provider is not None:
            QgsApplication.processingRegistry().removeProvider(self.provider)
        self.provider = None
