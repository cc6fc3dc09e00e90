"""The real drivers' openers, registered in the rig registry when it first looks one up.

Simulated parts reuse these (``open_asi_stage`` on a simulator's pseudo-terminal, the Micro-Manager
camera and focus on a core with simulated devices): a simulator is met through the real driver.
"""
from __future__ import annotations

import os
from pathlib import Path

from acquisition.profile import Profile
from acquisition.rig_registry import Opened, RigContext, register_opener
from devices.focus_drive import PROFILE_LIMITS, FocusLimits

STAGE_LIMITS = FocusLimits(-10000, 10000, "um")  # a stage's, when the profile gives none


def profile_limits(profile: Profile, default: FocusLimits | None) -> FocusLimits | None:
    """The profile's focus.limits, in its unit (their source says so, for messages); else ``default``."""
    if profile.focus.limits is None:
        return default
    return FocusLimits(profile.focus.limits[0], profile.focus.limits[1], profile.focus.unit, PROFILE_LIMITS)


def stage_limits(profile: Profile) -> FocusLimits:
    limits = profile_limits(profile, STAGE_LIMITS)
    assert limits is not None  # a stage has a default
    return limits


def demo_config_path() -> str:
    """The Micro-Manager demo configuration that the mm-test-adapters wheel ships."""
    import mm_test_adapters

    return os.path.join(mm_test_adapters.device_adapter_path(), "MMConfig_demo.cfg")


def open_asi_stage(context: RigContext, port: str) -> Opened:
    from devices.asi_stage import DEFAULT_BAUDRATE, AsiZStage

    profile = context.profile
    stage = AsiZStage(port, limits=stage_limits(profile), baudrate=profile.focus.baudrate or DEFAULT_BAUDRATE,
                      speed_um_per_s=profile.focus.speed_um_per_s)
    return Opened(stage, stage.close)


def open_optotune_lens(context: RigContext, port: str) -> Opened:
    from devices.optotune_lens import DEFAULT_BAUDRATE, OptotuneLens

    profile = context.profile
    mode = "current" if profile.focus.unit == "mA" else "focal power"
    lens = OptotuneLens(port, mode=mode, limits=profile_limits(profile, None),
                        baudrate=profile.focus.baudrate or DEFAULT_BAUDRATE)
    return Opened(lens, lens.close)


def open_micromanager_focus(context: RigContext) -> Opened:
    from devices.micromanager import MicroManagerFocusDrive

    focus = MicroManagerFocusDrive(context.shared["core"], label=context.profile.focus.label,
                                   limits=stage_limits(context.profile))
    focus.travel_speed = context.profile.focus.speed_um_per_s  # (the core does not say how fast its stage moves)
    return Opened(focus, focus.close)


def open_micromanager_camera(context: RigContext) -> Opened:
    from devices.micromanager import MicroManagerCamera

    settings = context.profile.camera
    camera = MicroManagerCamera(context.shared["core"], label=settings.label)
    if settings.exposure_ms is not None:
        camera.set_exposure_ms(settings.exposure_ms)
    return Opened(camera, camera.close)


def _open_genicam_camera(context: RigContext) -> Opened:
    from devices.genicam import GenICamCamera, bundled_producer

    settings = context.profile.camera
    cti = (bundled_producer() if settings.cti == "bundled" else settings.cti) or ""  # "": not found
    camera = GenICamCamera(cti, serial_number=settings.serial_number, model=settings.model, index=settings.index,
                           pixel_format=settings.pixel_format, exposure_ms=settings.exposure_ms, gain=settings.gain)
    return Opened(camera, camera.close)


def _open_micromanager_core(context: RigContext) -> Opened:
    from devices.micromanager import open_mmcore

    settings = context.profile.micromanager
    if settings.config not in (None, "demo") and not Path(settings.config).is_file():
        from devices.errors import DeviceNotFoundError

        hint = " (the demo adapters' configuration is config: demo)" if "demo".startswith(settings.config) else ""
        raise DeviceNotFoundError("Micro-Manager", f"micromanager.config: no configuration file at "
                                                   f"{settings.config}{hint}")
    core = open_mmcore(demo_config_path() if settings.config == "demo" else settings.config)
    if settings.config is None and set(core.getLoadedDevices()) <= {"Core"}:
        from devices.errors import DeviceNotFoundError

        # (It said "the configuration has no focus stage", of a configuration never given.)
        raise DeviceNotFoundError("Micro-Manager", "micromanager.config is not set, so the core has no devices: "
                                                   "give a configuration file (.cfg), or config: demo for the demo "
                                                   "adapters")
    set_profile_properties(context, core)
    return Opened(core, lambda: None)  # the devices on it close themselves


def set_profile_properties(context: RigContext, core) -> None:
    """The profile's micromanager.properties on ``core`` (``set_device_properties``), its camera's exposure not given
    twice."""
    settings = context.profile.micromanager
    camera = context.profile.camera.label or core.getCameraDevice()
    if context.profile.camera.exposure_ms is not None and "Exposure" in settings.properties.get(camera, {}):
        # The later one would win in silence (the properties are set first, exposure_ms after).
        raise ValueError(f"the exposure is given twice: camera.exposure_ms and micromanager.properties: {camera}: "
                         "Exposure; keep one")
    set_device_properties(core, settings.properties)


def set_device_properties(core, properties: dict[str, dict[str, str]]) -> None:
    """Set the profile's micromanager.properties: an unknown device is a DeviceNotFoundError, an unknown
    property an UnsupportedFeatureError (both with the nearest name), a value refused a DeviceErrorReply."""
    from devices.errors import DeviceErrorReply, DeviceNotFoundError, UnsupportedFeatureError, did_you_mean

    loaded = list(core.getLoadedDevices())
    for device, values in properties.items():
        if device not in loaded:
            raise DeviceNotFoundError(f"Micro-Manager device {device}", "micromanager.properties names a device "
                                      f"the configuration does not load ({did_you_mean(device, loaded, 'devices')})")
        names = list(core.getDevicePropertyNames(device))
        for name, value in values.items():
            if name not in names:  # asked first: setting it would also log pymmcore-plus's own warning
                raise UnsupportedFeatureError(f"Micro-Manager device {device}", f"micromanager.properties: no "
                                              f"property {name!r} ({did_you_mean(name, names, 'properties')})")
            if core.isPropertyReadOnly(device, name):  # MMCore would leave it as it is, without a word
                raise UnsupportedFeatureError(f"Micro-Manager device {device}", f"micromanager.properties: {name} "
                                              "is read-only; leave it out")
            try:
                core.setProperty(device, name, value)
            except (RuntimeError, ValueError) as error:
                raise DeviceErrorReply(f"Micro-Manager device {device}",
                                       f"micromanager.properties: cannot set {name} to {value!r}",
                                       str(error)) from error


def _open_pycromanager_core(context: RigContext) -> Opened:
    from devices.pycromanager_core import connect, stop_headless

    config = context.profile.micromanager.config
    if config is None:  # a running Micro-Manager
        return Opened(connect(), lambda: None)
    import mm_test_adapters

    core = connect(mm_test_adapters.device_adapter_path() if config == "demo" else None,
                   demo_config_path() if config == "demo" else config)
    return Opened(core, stop_headless)


def _open_mda_core(context: RigContext) -> Opened:
    from devices.errors import DeviceNotFoundError
    from devices.micromanager import open_mmcore

    config = context.profile.micromanager.config
    if config is None:
        raise DeviceNotFoundError("Micro-Manager", "an mda plan needs micromanager.config (a .cfg file, or demo) "
                                                   "or micromanager.simulated_devices: true")
    core = open_mmcore(demo_config_path() if config == "demo" else config)
    try:
        set_profile_properties(context, core)  # (an MDA on a configuration left them unset, without a word)
    except BaseException:
        core.unloadAllDevices()
        raise
    return Opened(core, core.unloadAllDevices)


register_opener("core", "micromanager", _open_micromanager_core)
register_opener("core", "pycromanager", _open_pycromanager_core)
register_opener("mda_core", "micromanager", _open_mda_core)
register_opener("focus", "asi", lambda context: open_asi_stage(context, context.profile.focus.port or ""))
register_opener("focus", "optotune", lambda context: open_optotune_lens(context, context.profile.focus.port or ""))
register_opener("focus", "micromanager", open_micromanager_focus)
register_opener("focus", "pycromanager", open_micromanager_focus)
register_opener("camera", "micromanager", open_micromanager_camera)
register_opener("camera", "pycromanager", open_micromanager_camera)
register_opener("camera", "genicam", _open_genicam_camera)
