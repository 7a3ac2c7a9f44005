"""QGIS API differences between 3.22 and 3.40 LTR / QGIS 4 (Qt6), in one place.

QGIS 3.36 moved the Processing enums into ``Qgis`` (``Qgis.ProcessingParameterFlag.Advanced``, ...). Qt5 builds of
3.36+ keep the old unscoped names (``QgsProcessingParameterDefinition.FlagAdvanced``) as aliases, Qt6 builds
(QGIS 4) do not, and 3.22 has only the old ones. Each constant below is the scoped value where it exists, else the
old one; the algorithms use only these. Qt classes come from ``qgis.PyQt`` only (never PyQt5/PyQt6 directly).
"""

from __future__ import annotations

from typing import Any

from qgis.core import (
    Qgis,
    QgsProcessing,
    QgsProcessingAlgorithm,
    QgsProcessingParameterDefinition,
    QgsProcessingParameterFile,
    QgsProcessingParameterNumber,
)


def _scoped(enum: str, member: str, legacy_owner: Any, legacy_name: str) -> Any:
    """``Qgis.<enum>.<member>`` where this QGIS has it (3.36+), else ``<legacy_owner>.<legacy_name>``."""
    scoped = getattr(Qgis, enum, None)
    if scoped is not None and hasattr(scoped, member):
        return getattr(scoped, member)
    return getattr(legacy_owner, legacy_name)


#: Parameter flags (``param.setFlags(param.flags() | FLAG_ADVANCED)``).
FLAG_ADVANCED = _scoped("ProcessingParameterFlag", "Advanced", QgsProcessingParameterDefinition, "FlagAdvanced")
FLAG_OPTIONAL = _scoped("ProcessingParameterFlag", "Optional", QgsProcessingParameterDefinition, "FlagOptional")
FLAG_HIDDEN = _scoped("ProcessingParameterFlag", "Hidden", QgsProcessingParameterDefinition, "FlagHidden")
#: Algorithm flags (``alg.flags()``).
ALG_FLAG_NO_THREADING = _scoped("ProcessingAlgorithmFlag", "NoThreading", QgsProcessingAlgorithm, "FlagNoThreading")
ALG_FLAG_CAN_CANCEL = _scoped("ProcessingAlgorithmFlag", "CanCancel", QgsProcessingAlgorithm, "FlagCanCancel")
#: QgsProcessingParameterNumber types.
NUMBER_INTEGER = _scoped("ProcessingNumberParameterType", "Integer", QgsProcessingParameterNumber, "Integer")
NUMBER_DOUBLE = _scoped("ProcessingNumberParameterType", "Double", QgsProcessingParameterNumber, "Double")
#: Processing source/layer types (QgsProcessing.TypeRaster, ...).
SOURCE_RASTER = _scoped("ProcessingSourceType", "Raster", QgsProcessing, "TypeRaster")
SOURCE_VECTOR_POLYGON = _scoped("ProcessingSourceType", "VectorPolygon", QgsProcessing, "TypeVectorPolygon")
#: QgsProcessingParameterFile behaviours.
FILE_BEHAVIOR_FILE = _scoped("ProcessingFileParameterBehavior", "File", QgsProcessingParameterFile, "File")
FILE_BEHAVIOR_FOLDER = _scoped("ProcessingFileParameterBehavior", "Folder", QgsProcessingParameterFile, "Folder")
#: Message levels (message bar, message log).
MESSAGE_INFO = _scoped("MessageLevel", "Info", Qgis, "Info")


def has_flag(flags: Any, flag: Any) -> bool:
    """``flag`` is set in ``flags`` (an int on 3.22, a QFlags of the scoped enum on 3.36+)."""
    try:
        return bool(flags & flag)
    except TypeError:
        return bool(int(flags) & int(flag))
