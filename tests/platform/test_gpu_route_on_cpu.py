"""The GPU route: our `[vllm]` and `[sglang]` extras are verl 0.9.1's own GPU stacks, read from its installed
metadata."""

from __future__ import annotations

import ast
from importlib.metadata import metadata, requires, version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mempo_verl.doctor import VERL_VERSION, declared_pins, resolve_verl_extras

REPO = Path(__file__).resolve().parents[2]
GPU_EXTRAS = ("vllm", "sglang")  # verl's rollout extras, each mirrored by an extra of ours of the same name


def setup_literal(name: str):
    """The literal that setup.py assigns to `name` (parsed, not run: nothing is built or downloaded)."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == [name]:
            return ast.literal_eval(node.value)
    raise AssertionError(f"setup.py assigns no literal `{name}`")


# ------------------------------------------------------------------------------- setup.py against verl's pins


@pytest.mark.parametrize("extra", GPU_EXTRAS)
def test_gpu_extra_is_exactly_verls_own_stack(extra):
    verl_requires = requires("verl")
    assert extra in metadata("verl").get_all("Provides-Extra")
    ours = setup_literal("extras_require")
    assert extra in ours, f"setup.py has no [{extra}] extra, verl {VERL_VERSION} declares one"
    # both sides with every verl[...] replaced by what verl's metadata declares for it
    assert resolve_verl_extras(ours[extra], verl_requires) == resolve_verl_extras([f"verl[{extra}]"], verl_requires)


@pytest.mark.parametrize("extra", GPU_EXTRAS)
def test_gpu_extra_pins_the_installed_verl(extra):
    # a verl[...] of another version would bring that version's pins, not the installed verl's
    verl_reqs = [Requirement(line) for line in setup_literal("extras_require").get(extra, [])]
    verl_reqs = [req for req in verl_reqs if canonicalize_name(req.name) == "verl"]
    assert version("verl") == VERL_VERSION
    assert all(str(req.specifier) == f"=={VERL_VERSION}" for req in verl_reqs), verl_reqs


@pytest.mark.parametrize("extra", GPU_EXTRAS)
def test_base_requirements_admit_verls_gpu_pins(extra):
    # e.g. our transformers>=5.0,<5.11 must hold verl's transformers==5.9.0, or the GPU route cannot resolve
    pins = declared_pins(extra)
    for req in map(Requirement, setup_literal("install_requires")):
        pin = pins.get(canonicalize_name(req.name))
        assert pin is None or req.specifier.contains(pin, prereleases=True), (str(req), pin)
