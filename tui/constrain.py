"""The chat app's ICD-10 toggle (Ctrl+G): answers limited to billable ICD-10-CM codes, or free text.

Turning it on compiles the constraint (or reads it from the disk cache) and checks it against the model's
tokenizer in a worker thread, so a cold compile (seconds) never freezes the screen; a constraint that
cannot be used is a notification and the toggle stays off. The constraint goes with each answer's
parameters (and so into the history); the spec is the one `medkit chat --constrain` named, else icd10.
"""

from __future__ import annotations

from typing import Any

from textual import work

from medkit.errors import MedkitError


class ConstrainToggle:
    """Mixed into ChatApp, which sets ``constrain`` (now) and ``_constrain_on`` (what turning on picks)."""

    constrain: str | None
    _constrain_on: str
    backend: Any

    def action_constrain(self) -> None:
        """Toggle: answers limited to billable ICD-10-CM codes (the --constrain spec, else icd10)."""
        app: Any = self  # a ChatApp
        if not app._idle("change what answers may be"):
            return
        if self.constrain:
            self._constrained(None)
        else:
            self.prepare_constraint(self._constrain_on)

    @work(thread=True, exclusive=True, group="constrain")
    def prepare_constraint(self, spec: str) -> None:
        """Compile (or read from the cache) and check the constraint off the UI thread (cold: seconds)."""
        app: Any = self
        prepare = getattr(self.backend, "grammar", None)
        try:
            if prepare is not None:
                prepare(spec)
        except MedkitError as exc:
            app.call_from_thread(app.notify, exc.one_line(), severity="error", timeout=10)
            return
        app.call_from_thread(self._constrained, spec)

    def _constrained(self, spec: str | None) -> None:
        app: Any = self
        self.constrain = spec
        app.update_status()
        app.notify(f"answers: billable ICD-10-CM codes only ({spec})" if spec else "answers: free text")
