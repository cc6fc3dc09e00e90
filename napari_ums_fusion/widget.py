"""The dock widget: fuse the selected z-stack layer, or follow the MDAs of a Micro-Manager core.

Fusing runs in a napari worker thread with a progress bar; the result arrives as two layers,
``<layer> fused`` and ``<layer> depth``, at the stack's pixel scale. "Cancel", or the dock closed, stops it
after the slice being fused, and nothing is added. "Follow MDA" fuses
every z-stack of every MDA that ``CMMCorePlus.instance()`` runs (as napari-micromanager's
are) into a folder, and shows the stack being acquired as it fuses ("MDA fused", "MDA depth").
"""
from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QEvent, QTimer
from qtpy.QtWidgets import (QCheckBox, QComboBox, QFormLayout, QHBoxLayout, QLabel, QLineEdit, QProgressBar,
                            QPushButton, QSpinBox, QVBoxLayout, QWidget)

from devices.errors import DeviceError
from fusion.engine import COMPOSITIONS, FusionResult, FusionSettings
from fusion.focus_checks import focus_warning
from fusion.focus_measures import DEFAULT_WINDOW_PX, MEASURES
from fusion.outputs import colour_by_shape
from fusion.overlap import started_beside
from napari_ums_fusion.layer_stack import LayerStack, fuse_layer_stack, layer_stack
from napari_ums_fusion.layers import DEPTH_COLORMAP, evenly_spaced

PREVIEW_INTERVAL_MS = 300
# Where "Follow MDA" writes until the user names another folder: in the home folder, made when the first MDA
# starts. (A temporary folder lost the stacks at the next reboot, or at once where /tmp is in memory.)
DEFAULT_MDA_FOLDER = Path("~") / "ums-fusion" / "mda"
MDA_NAME = "MDA"  # the MDA layers: "MDA fused", "MDA depth"


@dataclass
class _Fusing:
    """A fusion of a layer in progress: its worker, and whether it was cancelled (its result is then dropped)."""

    stack: LayerStack
    worker: Any = None
    slices_done: int = 0
    cancelled: bool = False


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
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
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
        buttons = QHBoxLayout()
        buttons.addWidget(self.fuse_button)
        buttons.addWidget(self.cancel_button)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.follow_box)
        layout.addWidget(QLabel("MDA outputs folder"))
        layout.addWidget(self.follow_folder)
        layout.addWidget(self.status)
        layout.addStretch()
        self.fuse_button.clicked.connect(self.fuse_selected)
        self.cancel_button.clicked.connect(self.cancel_fusion)
        self.follow_box.toggled.connect(self._follow_toggled)
        self.worker = None
        self._fusing: _Fusing | None = None  # the fusion of a layer in progress
        self.follower = None
        self.previews_shown = 0
        self._finishing = None        # a follower stopped mid-MDA, finishing the stacks in progress
        self._shown_key = None        # what the MDA layers last showed: (stack, slices, final)
        self._preview_job = None      # (key, Future of handler.preview()) while a preview is composed
        self._dismissed: set[str] = set()  # MDA layers the user deleted: not put back until the next stack
        self._putting = False
        self._said_stop = None
        self.warming: threading.Thread | None = None
        napari_viewer.layers.events.inserted.connect(self._layer_inserted)
        napari_viewer.layers.events.removed.connect(self._layer_removed)
        for layer in napari_viewer.layers:
            self._watch(layer)
        self._refresh_layers()
        self._timer = QTimer(self)
        self._timer.setInterval(PREVIEW_INTERVAL_MS)
        self._timer.timeout.connect(self.show_mda_preview)

    # -- settings --
    def settings(self) -> FusionSettings:
        return FusionSettings(measure=self.method_box.currentText(), composition=self.composition_box.currentText(),
                              window_px=self.window_box.value())

    def _watch(self, layer, watch: bool = True):
        # A layer renamed, or whose data became a stack (or stopped being one), changes what can be fused.
        for name in ("name", "data"):
            emitter = getattr(layer.events, name, None)
            if emitter is not None:
                (emitter.connect if watch else emitter.disconnect)(self._refresh_layers)

    def _layer_inserted(self, event):
        self._watch(event.value)
        self._refresh_layers()

    def _layer_removed(self, event):
        layer = event.value
        self._watch(layer, watch=False)
        if not self._putting and layer.name in (f"{MDA_NAME} fused", f"{MDA_NAME} depth"):
            self._dismissed.add(layer.name)
        self._refresh_layers()

    def _refresh_layers(self, *_):
        current = self.layer_box.currentText()
        self.layer_box.blockSignals(True)
        self.layer_box.clear()
        from napari.layers import Image

        names = [layer.name for layer in self.viewer.layers
                 if isinstance(layer, Image) and layer.ndim >= 3]  # (ndim: without the rgb axis)
        self.layer_box.addItems(names)
        if current in names:
            self.layer_box.setCurrentText(current)
        self.layer_box.blockSignals(False)

    # -- fusing a layer --
    def fuse_selected(self):
        """Fuse the chosen layer in a worker thread; returns the worker (tests wait on it)."""
        from napari.qt.threading import create_worker

        name = self.layer_box.currentText()
        if not name:
            self._say("no z-stack layer to fuse: open a stack first")
            return None
        if name not in self.viewer.layers:  # (renamed or deleted since the list was made)
            self._refresh_layers()
            self._say(f"no layer {name!r} any more: choose the z-stack layer again")
            return None
        layer = self.viewer.layers[name]
        # A multiscale layer: its full-resolution level is fused.
        data = layer.data[0] if getattr(layer, "multiscale", False) else layer.data
        try:
            # (napari lines a layer's axes up with the viewer's last ones: ask the layer where the sliders are)
            stack = layer_stack(name, data, layer.rgb, layer.scale, layer.translate,
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
        if getattr(layer, "multiscale", False):
            notes.append("It is multiscale: its full-resolution level is fused.")
        frame = tuple(data.shape[-3:-1] if layer.rgb else data.shape[-2:])
        if settings.window_px > min(frame):
            notes.append(f"The window ({settings.window_px} px) is larger than the frame ({frame[0]} x {frame[1]} px): "
                         "the focus measure sees little local detail there; a smaller window tells focus better.")
        self._say(" ".join([f"fusing {_slices(stack.n_slices)} of {name}...", *notes]))
        run = _Fusing(stack)
        # Connected at creation: an "errored" connected later leaves superqt's own, which raises the error
        # again in Qt's thread (a plain Qt host aborts). A cancelled run's result (made as it was cancelled, on its
        # way here) is dropped: nothing half-done is shown.
        self.worker = run.worker = create_worker(fuse_layer_stack, stack, settings, _connect={
            "yielded": lambda item: self._fusion_step(item, stack, notes, run),
            "errored": lambda error: None if run.cancelled else
            self._say(f"fusion of {name} failed: {type(error).__name__}: {error}"),
            "finished": lambda: self._fusion_ended(run)}, _start_thread=False)
        self._fusing = run
        self.cancel_button.setEnabled(True)
        self.worker.start()
        return self.worker

    def cancel_fusion(self) -> bool:
        """Stop the fusion in progress once the slice being fused is in (a slice is not cut short); its result is
        not shown. Returns whether one was running."""
        run = self._fusing
        if run is None or run.cancelled:
            return False
        run.cancelled = True
        run.worker.quit()
        self.cancel_button.setEnabled(False)
        self._say(f"cancelling the fusion of {run.stack.name}...")
        return True

    def _fusion_ended(self, run: _Fusing):
        if self._fusing is run:
            self._fusing = None
        with contextlib.suppress(RuntimeError):  # (the dock's widget deleted since: nobody to tell)
            self.fuse_button.setEnabled(True)
            self.cancel_button.setEnabled(False)
            if run.cancelled and run.slices_done == run.stack.n_slices:  # (every slice in: "after 7 of 7 slices")
                self._say(f"fusion of {run.stack.name} cancelled while composing the image from its "
                          f"{_slices(run.stack.n_slices)}: nothing was added")
            elif run.cancelled:
                self._say(f"fusion of {run.stack.name} cancelled after {run.slices_done} of "
                          f"{_slices(run.stack.n_slices)}: nothing was added")

    def _fusion_step(self, item, stack, notes=(), run: _Fusing | None = None):
        if isinstance(item, FusionResult) and run is not None and run.cancelled:
            return
        if isinstance(item, FusionResult):
            try:
                names = self._show_result(stack.name, item.fused, item.depth, stack.pixel_scale, item.depth_unit,
                                          stack.pixel_units, stack.pixel_translate)
            except Exception as error:  # (never left saying "fusing...")
                self._say(f"fused {_slices(stack.n_slices)} of {stack.name}, but the result could not be shown: "
                          f"{type(error).__name__}: {error}")
                return
            # What --refuse would warn of: one slice has nothing to fuse; alike or blank slices no focus to tell.
            said = "Only one slice: it is shown as it is, with nothing to fuse." if stack.n_slices == 1 else \
                focus_warning(item.focus_scores, item.depth, stack.name)
            moved = [f"The result is in {shown!r}: {wanted!r} is another kind of layer."
                     for wanted, shown in names if shown != wanted]
            said_all = [*notes, *([said] if said else []), *moved]
            self._say(" ".join([f"fused {_slices(stack.n_slices)} of {stack.name}.", *said_all]))
        else:
            self.progress.setValue(item[0])
            if run is not None:
                run.slices_done = item[0]

    def _show_result(self, name, fused, depth, pixel_scale, depth_unit="um", pixel_units=("pixel", "pixel"),
                     translate=(0.0, 0.0), leave_out=frozenset()):
        """The fused and depth layers at the stack's pixel scale and place (y, x) and in its units, so that they
        overlay it and scale bars and coordinates agree with the stack's; ``depth_unit`` is that of the depth
        map's values; layers named in ``leave_out`` are not shown. Returns [(name wanted, name given)] for those
        shown."""
        colour = colour_by_shape(fused.shape)  # (only an RGB layer's slices have samples to fuse)
        layers = [(f"{name} fused", fused, {"rgb": colour}),
                  (f"{name} depth", depth, {"colormap": DEPTH_COLORMAP, "metadata": {"depth_unit": depth_unit}})]
        return [self._put_layer(layer_name, data, pixel_scale, pixel_units, translate, **attributes)
                for layer_name, data, attributes in layers if layer_name not in leave_out]

    def _put_layer(self, name, data, scale, units, translate=(0.0, 0.0), **attributes):
        """Update the result layer ``name``, or add it; a stale one of another shape or kind (RGB, grey) is
        replaced; where the name is another kind of layer (points...), the result goes to a free name."""
        from napari.layers import Image

        wanted, n = name, 1
        while name in self.viewer.layers and not isinstance(self.viewer.layers[name], Image):
            n += 1
            name = f"{wanted} [{n}]"
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            if layer.rgb == bool(attributes.get("rgb", False)) and layer.data.ndim == data.ndim \
                    and not getattr(layer, "multiscale", False):
                layer.data = data
                # (fused again: the stack may be another of that name)
                layer.scale, layer.translate, layer.units = scale, translate, units
                if "metadata" in attributes:
                    layer.metadata = attributes["metadata"]
                layer.reset_contrast_limits()
                return wanted, name
            self._putting = True
            try:
                self.viewer.layers.remove(layer)
            finally:
                self._putting = False
        self.viewer.add_image(data, name=name, scale=scale, translate=translate, units=units, **attributes)
        return wanted, name

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
            self._not_following("not following MDAs: name the folder their outputs go to first")
            return
        folder = os.path.expandvars(os.path.expanduser(folder))
        settings = self.settings()
        try:
            self.follower = MDAFollower(core, folder, measure=settings.measure,
                                        composition=settings.composition, window_px=settings.window_px)
        except (ValueError, DeviceError) as error:  # (the folder is an existing file; a Multi Camera over unlike ones)
            self._not_following(f"not following MDAs: {error}")
            return
        self._shown_key, self._dismissed, self._said_stop, self._preview_job = None, set(), None, None
        self._warm(core, settings)
        self._timer.start()
        joined = " An MDA is running: it is not fused; following starts with the next one." \
            if self.follower.joined_mid_mda else ""
        self._say(f"following MDAs: fused stacks go to {folder}.{joined}")

    def _not_following(self, message: str):
        self._untick()
        self._say(message)

    def _untick(self):
        self.follow_box.blockSignals(True)
        self.follow_box.setChecked(False)
        self.follow_box.blockSignals(False)

    def _warm(self, core, settings):
        """Load (or compile) the fusion kernels in a thread, not at the first preview in the GUI's."""
        try:
            shape = (int(core.getImageHeight()), int(core.getImageWidth()))
            dtype = np.uint8 if int(core.getImageBitDepth()) <= 8 else np.uint16
            channels = int(core.getNumberOfComponents())
        except Exception:  # (no camera) the first preview loads them instead
            return
        frame = np.zeros(shape + ((3,) if channels > 1 else ()), dtype)
        self.warming = threading.Thread(target=_warm_kernels, args=(frame, settings), name="fusion-warm",
                                        daemon=True)
        self.warming.start()

    def stop_following(self):
        """Stop following: an MDA in progress goes on unfused, its stacks so far are finished as a cancelled
        MDA's are (what arrived is fused, the files closed, the summary written), in a thread."""
        follower, self.follower = self.follower, None
        if follower is None:
            self._timer.stop()
            return
        if follower.stop():
            self._finishing = follower
            self._say(f"stopped following MDAs: finishing the stacks of the MDA in progress in "
                      f"{follower.handler.out_dir}...")
            self._timer.start()  # (until they are finished)
        else:
            self._timer.stop()
            if self._said_stop is None:
                self._say("stopped following MDAs")

    def show_mda_preview(self):
        """Show the stack being acquired as fused so far (the timer calls this while following): only what is
        new (a slice, a final image); an MDA layer the user deleted stays deleted until the next stack."""
        if self._finishing is not None:
            self._finished_stopping()
        if self.follower is None:
            if self._finishing is None:
                self._timer.stop()
            return
        handler = self.follower.handler
        if handler.stopped_by is not None and handler.finished.is_set():
            self._said_stop = f"stopped following MDAs: {handler.stopped_by}"
            self.stop_following()
            self._not_following(self._said_stop)
            return
        if handler.refused is not None:  # (its plan: nothing of this MDA is fused; the next one is followed)
            self._say(f"MDA not fused: {handler.refused}")
            return
        stream = handler.latest
        if stream is None:
            return
        if self.warming is not None and self.warming.is_alive():
            # (a preview now would load or compile its kernels in the GUI's thread, or wait there for numba's
            # compiler lock: the GUI froze for seconds at the first one)
            return
        self._preview(handler, stream)

    def _preview(self, handler, stream):
        if self._preview_job is not None:
            key, job = self._preview_job
            if not job.done():
                return
            self._preview_job = None
            self._show_preview(handler, stream, key, job.result())  # (and, below, the next where there is one)
        key = (id(stream), stream.n_slices, stream.result is not None)
        if key == self._shown_key:
            return
        if key[2]:  # the final image, made: nothing to compute
            self._show_preview(handler, stream, key, handler.preview())
        else:
            # Composed on a thread of its own, shown at a later tick: it waits for the slice being fused (the
            # fusion's lock) and collapses the pyramid, which held the GUI's thread (79 ms at 5 MP, measured).
            self._preview_job = (key, started_beside(handler.preview))

    def _show_preview(self, handler, stream, key, preview):
        if preview is None:
            return
        if self._shown_key is None or self._shown_key[0] != key[0]:
            self._dismissed = set()  # a new stack: its layers are shown again
        self._shown_key = key
        name, fused, depth = preview
        pixel_um = stream.info.pixel_size_um
        unit = "micrometer" if pixel_um else "pixel"
        # One pair of layers shows the stack being acquired; the finished ones are in the folder.
        self._show_result(MDA_NAME, np.asarray(fused), np.asarray(depth), (pixel_um or 1.0,) * 2, "um", (unit, unit),
                          leave_out=self._dismissed)
        self.previews_shown += 1
        so_far = f"fused from {_slices(stream.n_slices)}" if key[2] else f"{stream.n_slices} slices so far"
        self._say(f"MDA: {name}, {so_far}; outputs in {handler.out_dir}")

    def _finished_stopping(self):
        follower = self._finishing
        handler = follower.handler
        if not handler.finished.is_set():
            return
        self._finishing = None
        summary = handler.summary or {}
        fused = [r["name"] for r in summary.get("stacks", []) if not r.get("error")]
        kept = f"{len(fused)} stack{'' if len(fused) == 1 else 's'} fused from the slices that arrived" \
            if fused else "nothing was fused"
        self._say(f"stopped following MDAs mid-MDA: {kept}; outputs and summary in {handler.out_dir}")

    def _say(self, message: str):
        self.status.setText(message)

    # -- the dock closed --
    # A dock closed or removed (napari's close button takes the widget out of its dock; it is not closed) stops
    # following (it went on fusing every MDA of the core into its folder, unseen, until napari quit) and cancels the
    # fusion of a layer (it went on, and added its layers to a viewer whose dock was gone).
    def closeEvent(self, event):
        self._stop_work_unseen()
        super().closeEvent(event)

    def changeEvent(self, event):
        if event.type() == QEvent.Type.ParentChange and self.parent() is None:
            self._stop_work_unseen()
        super().changeEvent(event)

    def _stop_work_unseen(self):
        self.cancel_fusion()
        if self.follower is not None:
            self.stop_following()
            self._untick()


def _warm_kernels(frame, settings) -> None:
    from fusion.kernel_warmup import warm_kernels
    from fusion.parallel_kernels import kernels_may_run_concurrently

    try:
        kernels_may_run_concurrently()  # (numba chooses its threading layer here, as it is asked)
        warm_kernels(frame, settings, preview=True)  # (the preview's too: the dock shows stacks being fused)
    except Exception:  # (a failed warm-up only costs the first preview's time)  # noqa: BLE001
        pass


def _slices(count: int) -> str:
    return f"{count} slice{'' if count == 1 else 's'}"


def _placement_note(stack) -> str | None:
    """Where the slices' z come from, when the layer's own placement would not give them, or in which unit, when
    not in the layer's."""
    if stack.z_unit_given is not None:
        return f"Its z scale is in {stack.z_unit_given}: fused in µm, and the depth map is in µm."
    if stack.z_from != "focus_positions":
        return None
    if evenly_spaced(stack.z_um) is None:
        return "Its slices are not evenly spaced: fused at their focus positions from the layer's metadata."
    return None
