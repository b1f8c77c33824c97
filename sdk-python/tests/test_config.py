"""Configuration: `Config` fields, the process default, `use_config` scopes
(nested, and following asyncio tasks so two homes run side by side), and
the environment fallback, which stays the core's."""

from __future__ import annotations

import asyncio
import pathlib
import tempfile

import pytest

import microsandbox as msb
from helpers import make_artifact


def test_config_fields_and_nesting() -> None:
    cfg = msb.Config(home="/a", accel="tcg")
    assert cfg.home == pathlib.Path("/a") and cfg.accel == "tcg" and cfg.guest_assets_dir is None
    assert msb.current_config() is None
    with msb.use_config(cfg):
        with msb.use_config(msb.Config(guest_assets_dir="/g")) as inner:
            assert inner.home == pathlib.Path("/a")
            assert inner.guest_assets_dir == pathlib.Path("/g") and inner.accel == "tcg"
            current = msb.current_config()
            assert current is not None and current.guest_assets_dir == pathlib.Path("/g")
        current = msb.current_config()
        assert current is not None and current.guest_assets_dir is None
    assert msb.current_config() is None


async def test_scopes_follow_tasks_and_never_mix(home: pathlib.Path) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        make_artifact(pathlib.Path(a) / "snapshots" / "only-a")
        make_artifact(pathlib.Path(b) / "snapshots" / "only-b", data=b"b")

        async def names_in(home_dir: str) -> list[str | None]:
            with msb.use_config(msb.Config(home=home_dir)):
                await msb.Snapshot.reindex()
                await asyncio.sleep(0.01)
                # A task started here inherits the scope.
                listed = await asyncio.create_task(msb.Snapshot.list())
                return [h.name for h in listed]

        got_a, got_b = await asyncio.gather(names_in(a), names_in(b))
        assert (got_a, got_b) == (["only-a"], ["only-b"])
    # The fixture's process default is in force again outside the scopes.
    assert await msb.Snapshot.list() == []


async def test_the_environment_is_the_fallback(
    home: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with tempfile.TemporaryDirectory() as env_home:
        make_artifact(pathlib.Path(env_home) / "snapshots" / "from-env")
        monkeypatch.setenv("MSB_HOME", env_home)
        msb.set_default_config(msb.Config())
        try:
            assert (await msb.Snapshot.open("from-env")).path.parent.parent == pathlib.Path(env_home)
            monkeypatch.setenv("MSB_ACCEL", "bogus")
            with pytest.raises(msb.InvalidConfigError):
                await msb.Snapshot.list()
            with msb.use_config(msb.Config(accel="tcg")):
                assert await msb.Snapshot.list() == []
        finally:
            msb.set_default_config(msb.Config(home=home))
