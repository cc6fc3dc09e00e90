"""The dock widget: fuse the selected z-stack layer, or follow the MDAs of a Micro-Manager core.

Fusing runs in a napari worker thread with a progress bar; the result arrives as two layers,
``<layer> fused`` and ``<layer> depth``, at the stack's pixel scale. "Follow MDA" fuses
every z-stack of every MDA that ``CMMCorePlus.instance()`` runs (as napari-micromanager's
are) into a folder, and shows the stack being acquired as it fuses ("MDA fused", "MDA depth").
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                            QSpinBox, QVBoxLayout, QWidget)

from fusion.engine import COMPOSITIONS, FusionResult, FusionSettings
from fusion.focus_checks import focus_warning
from fusion.focus_measures import DEFAULT_WINDOW_PX, MEASURES
from fusion.outputs import colour_by_shape
from napari_ums_fusion.layer_stack import fuse_layer_stack, layer_stack
from napari_ums_fusion.layers import DEPTH_COLORMAP, evenly_spaced

PREVIEW_INTERVAL_MS = 300
# Where "Follow MDA" writes until the user names another folder: in the home folder, made when the first MDA
# starts. (A temporary folder lost the stacks at the next reboot, or at once where /tmp is in memory.)
DEFAULT_MDA_FOLDER = Path("~") / "ums-fusion" / "mda"


class FusionWidget(QWidget):
    def __init__(self, napari_viewer):
        super().__init__()
        self.viewer = napari_viewer
        self.layer_box = QComboBox()
        self.method_box = QComboBox()
        self.method_box.addItems(sorted(MEASURES))
        self.method_box.setCurrentText(FusionSettings().measure)
        self.composition_box = QComboBox()
        self.composition_box.addItems(COMPOSITIONS)
        self.window_box = QSpinBox()
        self.window_box.setRange(1, 255)
        self.window_box.setValue(DEFAULT_WINDOW_PX)
        self.fuse_button = QPushButton("Fuse")
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.follow_box = QCheckBox("Follow MDA (fuse every z-stack as it is acquired)")
        self.follow_folder = QLineEdit(str(DEFAULT_MDA_FOLDER.expanduser()))
        form = QFormLayout()
        form.addRow("z-stack layer", self.layer_box)
        form.addRow("focus measure", self.method_box)
        form.addRow("composition", self.composition_box)
        form.addRow("window (px)", self.window_box)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.fuse_button)
        layout.addWidget(self.progress)
        layout.addWidget(self.follow_box)
        layout.addWidget(QLabel("MDA outputs folder"))
        layout.addWidget(self.follow_folder)
        layout.addWidget(self.status)
        layout.addStretch()
        self.fuse_button.clicked.connect(self.fuse_selected)
        self.follow_box.toggled.connect(self._follow_toggled)
        for event in (napari_viewer.layers.events.inserted, napari_viewer.layers.events.removed):
            event.connect(self._refresh_layers)
        self._refresh_layers()
        self.worker = None
        self.follower = None
        self.previews_shown = 0
        self._timer = QTimer(self)
        self._timer.setInterval(PREVIEW_INTERVAL_MS)
        self._timer.timeout.connect(self.show_mda_preview)

    # -- settings --
    def settings(self) -> FusionSettings:
        return FusionSettings(measure=self.method_box.currentText(), composition=self.composition_box.currentText(),
                              window_px=self.window_box.value())

    def _refresh_layers(self, *_):
        current = self.layer_box.currentText()
        self.layer_box.clear()
        from napari.layers import Image

        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Image) and layer.data.ndim - (3 if layer.rgb else 2) >= 1]
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)

    # -- fusing a layer --
    def fuse_selected(self):
        """Fuse the chosen layer in a worker thread; returns the worker (tests wait on it)."""
        from napari.qt.threading import create_worker

        name = self.layer_box.currentText()
        if not name:
            self._say("no z-stack layer to fuse: open a stack first")
            return None
        layer = self.viewer.layers[name]
        try:
            # (napari lines a layer's axes up with the viewer's last ones: ask the layer where the sliders are)
            stack = layer_stack(name, layer.data, layer.rgb, layer.scale, layer.translate,
                                layer.world_to_data(self.viewer.dims.point), layer.metadata,
                                getattr(layer, "units", None))
            settings = self.settings()
        except ValueError as error:
            self._say(str(error))
            return None
        self.progress.setRange(0, stack.n_slices)
        self.progress.setValue(0)
        self.fuse_button.setEnabled(False)
        notes = [note for note in (stack.conversion, _placement_note(stack)) if note]
        self._say(" ".join([f"fusing {_slices(stack.n_slices)} of {name}...", *notes]))
        # Connected at creation: an "errored" connected later leaves superqt's own, which raises the error
        # again in Qt's thread (a plain Qt host aborts).
        self.worker = create_worker(fuse_layer_stack, stack, settings, _connect={
            "yielded": lambda item: self._fusion_step(item, stack, notes),
            "errored": lambda error: self._say(f"fusion of {name} failed: {type(error).__name__}: {error}"),
            "finished": lambda: self.fuse_button.setEnabled(True)}, _start_thread=False)
        self.worker.start()
        return self.worker

    def _fusion_step(self, item, stack, notes=()):
        if isinstance(item, FusionResult):
            depth_unit = stack.z_unit if item.depth_unit == "um" else item.depth_unit
            self._show_result(stack.name, item.fused, item.depth, stack.pixel_scale, depth_unit, stack.pixel_units)
            # What --refuse would warn of: one slice has nothing to fuse; alike or blank slices no focus to tell.
            said = "Only one slice: it is shown as it is, with nothing to fuse." if stack.n_slices == 1 else \
                focus_warning(item.focus_scores, item.depth, stack.name)
            said_all = [*notes, *([said] if said else [])]
            self._say(" ".join([f"fused {_slices(stack.n_slices)} of {stack.name}.", *said_all]))
        else:
            self.progress.setValue(item[0])

    def _show_result(self, name, fused, depth, pixel_scale, depth_unit="um", pixel_units=("pixel", "pixel")):
        """The fused and depth layers at the stack's pixel scale and in its units (y, x), so that scale bars and
        coordinates agree with the stack's; ``depth_unit`` is that of the depth map's values."""
        colour = colour_by_shape(fused.shape)  # (only an RGB layer's slices have samples to fuse)
        self._put_layer(f"{name} fused", fused, pixel_scale, pixel_units, rgb=colour)
        self._put_layer(f"{name} depth", depth, pixel_scale, pixel_units, colormap=DEPTH_COLORMAP,
                        metadata={"depth_unit": depth_unit})

    def _put_layer(self, name, data, scale, units, **attributes):
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            layer.scale, layer.units = scale, units  # (fused again: the stack may be another of that name)
            if "metadata" in attributes:
                layer.metadata = attributes["metadata"]
            layer.reset_contrast_limits()
        else:
            self.viewer.add_image(data, name=name, scale=scale, units=units, **attributes)

    # -- following MDAs --
    def _follow_toggled(self, on: bool):
        if on:
            from pymmcore_plus import CMMCorePlus

            self.follow_mda(CMMCorePlus.instance())
        else:
            self.stop_following()

    def follow_mda(self, core):
        """Fuse every z-stack of the MDAs ``core`` runs into the outputs folder, showing them as they fuse."""
        from napari_ums_fusion.mda_follow import MDAFollower

        self.stop_following()
        folder = self.follow_folder.text().strip()
        if not folder:
            self._say("not following MDAs: name the folder their outputs go to first")
            self.follow_box.setChecked(False)
            return
        folder = os.path.expandvars(os.path.expanduser(folder))
        settings = self.settings()
        self.follower = MDAFollower(core, folder, measure=settings.measure,
                                    composition=settings.composition, window_px=settings.window_px)
        self._timer.start()
        self._say(f"following MDAs: fused stacks go to {folder}")

    def stop_following(self):
        self._timer.stop()
        if self.follower is not None:
            self.follower.stop()
            self.follower = None

    def show_mda_preview(self):
        """Show the stack being acquired as fused so far (the timer calls this while following)."""
        if self.follower is None:
            return
        handler = self.follower.handler
        stream, preview = handler.latest, handler.preview()
        if preview is None or stream is None:
            return
        name, fused, depth = preview
        pixel_um = stream.info.pixel_size_um
        unit = "micrometer" if pixel_um else "pixel"
        # One pair of layers shows the stack being acquired; the finished ones are in the folder.
        self._show_result("MDA", np.asarray(fused), np.asarray(depth), (pixel_um or 1.0,) * 2, "um", (unit, unit))
        self.previews_shown += 1
        self._say(f"MDA: {name}, {stream.n_slices} slices so far; outputs in {handler.out_dir}")

    def _say(self, message: str):
        self.status.setText(message)


def _slices(count: int) -> str:
    return f"{count} slice{'' if count == 1 else 's'}"


def _placement_note(stack) -> str | None:
    """Where the slices' z come from, when the layer's own placement would not give them."""
    if stack.z_from != "focus_positions":
        return None
    if evenly_spaced(stack.z_um) is None:
        return "Its slices are not evenly spaced: fused at their focus positions from the layer's metadata."
    return None
