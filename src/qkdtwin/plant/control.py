"""The plant's control endpoint: events in, ground truth out (tests and benchmarks only).

A small FastAPI app on plain HTTP, loopback by default. It is the operator's *lab bench*, not
a network interface: the twin never calls it (the attach file does not even name it).

| route | what |
|---|---|
| ``GET /health`` | plant time, modules, whether the loop runs |
| ``GET /truth`` | ground truth: ``links[]`` with ``id``, ``loss_db``, ``attack``, ... |
| ``POST /links/{link}/attack`` | ``{"type": T, "fraction": F}``, T one of ``ATTACK_KINDS`` |
| ``POST /links/{link}/clear`` | end the attack, repair a cut |
| ``POST /links/{link}/cut`` | cut the fibre |
| ``POST /links/{link}/drift`` | ``{"loss_db": D}``: a loss step of D dB (negative: repair) |

Bad input is answered ``400 {"error", "field", "message"}`` (unknown link, type, fraction out
of range) or ``422`` (a body that is not the schema), never with a stopped plant.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from pydantic import BaseModel, ConfigDict, Field

from qkdtwin.ops import _install_error_handler, service_app

if TYPE_CHECKING:
    from qkdtwin.plant.runner import Plant

__all__ = ["AttackBody", "DriftBody", "LinkTruth", "PlantTruth", "create_control_app"]


class AttackBody(BaseModel):
    """Body of ``POST /links/{link}/attack``."""

    model_config = ConfigDict(extra="forbid")
    type: str = "intercept-resend"
    fraction: float = Field(default=1.0, ge=0.0, le=1.0)


class DriftBody(BaseModel):
    """Body of ``POST /links/{link}/drift``: a loss step, dB."""

    model_config = ConfigDict(extra="forbid")
    loss_db: float = Field(ge=-60.0, le=60.0)


class EnableBody(BaseModel):
    """Body of ``POST /modules/{link}/enable``."""

    model_config = ConfigDict(extra="forbid")
    enabled: bool = Field(strict=True)


class LinkTruth(BaseModel):
    """Ground truth of one link now."""

    id: str
    module_id: str
    loss_db: float | None = Field(description="channel loss incl. tap, dB (null: cut)")
    fiber_loss_db: float
    detector_efficiency: float
    dark_count_prob: float
    misalignment: float
    length_km: float
    attack: dict[str, Any] | None
    cut: bool
    enabled: bool = Field(description="the module delivers keys to its KMEs")
    kme_enabled: bool | None = Field(
        None, description="both KMEs deliver and relay from this link (null: no KMEs)"
    )
    keys_delivered_since_attack: int | None = Field(
        None,
        description="keys both KMEs' stores of this link delivered since the attack began "
        "(null: no attack, or no KMEs)",
    )


class PlantTruth(BaseModel):
    """``GET /truth``."""

    t: float = Field(description="plant time, s since start")
    clock_epoch: float = Field(description="Unix time of plant time 0 on the modules' clocks")
    links: list[LinkTruth]


def create_control_app(plant: Plant) -> FastAPI:
    """Build the control app of a running :class:`~qkdtwin.plant.runner.Plant`."""
    app = service_app(
        title="qkdtwin plant control",
        version="1",
        description="Events in, ground truth out. Tests and benchmarks only: the twin never "
        "reads it.",
    )

    _install_error_handler(app)

    # ``dict[str, Any]`` kept: FastAPI derives the documented response schema from it
    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"t": plant.t, "modules": len(plant.modules), "running": plant.running}

    @app.get("/truth", response_model=PlantTruth)
    def truth() -> PlantTruth:
        return plant.truth()

    @app.post("/links/{link}/attack", response_model=LinkTruth)
    def attack(link: str, body: AttackBody) -> LinkTruth:
        return plant.attack(link, body.type, body.fraction)

    @app.post("/links/{link}/clear", response_model=LinkTruth)
    def clear(link: str) -> LinkTruth:
        return plant.clear(link)

    @app.post("/links/{link}/cut", response_model=LinkTruth)
    def cut(link: str) -> LinkTruth:
        return plant.cut(link)

    @app.post("/modules/{link}/enable", response_model=LinkTruth)
    def enable(link: str, body: EnableBody) -> LinkTruth:
        """Stop (``false``) or resume (``true``) a module's key delivery to its KMEs."""
        return plant.set_enabled(link, body.enabled)

    @app.post("/links/{link}/drift", response_model=LinkTruth)
    def drift(link: str, body: DriftBody) -> LinkTruth:
        return plant.drift(link, body.loss_db)

    return app
