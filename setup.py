"""Build hook: ship the repository's ``configs/`` in the wheel as ``leanseg/configs/``.

Everything else about the package is declared in ``pyproject.toml``. The YAML files stay where
users and tests read them (``configs/`` at the repository root); a wheel build copies them into
the package so that an installed ``leanseg`` resolves ``leanseg train ldn/rn18_32to4_camvid``
(:func:`leanseg.config.resolve_config_path`). An editable install copies nothing: it reads the
checkout's ``configs/`` directly.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

CONFIGS = Path(__file__).resolve().parent / "configs"


class BuildPyWithConfigs(build_py):
    """``build_py`` that also copies ``configs/**/*.yaml`` to ``<build>/leanseg/configs/``."""

    def run(self) -> None:
        super().run()
        if self.editable_mode:
            return
        target = Path(self.build_lib) / "leanseg" / "configs"
        for path in sorted(CONFIGS.rglob("*.yaml")):
            destination = target / path.relative_to(CONFIGS)
            self.mkpath(str(destination.parent))
            self.copy_file(str(path), str(destination))


setup(cmdclass={"build_py": BuildPyWithConfigs})
