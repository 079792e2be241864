"""Lab 4 known-wrong solutions: each breaks one thing the reference gets right."""

from __future__ import annotations

from saga_reference import SagaOrchestrator as Reference


class VolatileLog(Reference):
    """Keeps the sagas in memory only: a crash forgets the sagas in flight, their effects stay in place."""

    def boot(self):
        self.sagas = {}


class NoResend(Reference):
    """Sends each command once and waits for its reply: a lost command or reply stalls the saga for good."""

    def _resend(self, saga_id, waiting_for):
        pass


class ForwardCompensation(Reference):
    """Undoes the completed steps in the order they ran (create_order first), not in reverse."""

    def _compensate(self, saga_id, saga, refused):
        saga["phase"] = "compensating"
        saga["undo"] = list(range(refused))
        self._next_compensation(saga_id, saga)


class CompensateRefusedStep(Reference):
    """Counts the refused step among those to undo: sends it a compensation although it applied nothing."""

    def _compensate(self, saga_id, saga, refused):
        saga["phase"] = "compensating"
        saga["undo"] = list(range(refused, -1, -1))
        self._next_compensation(saga_id, saga)


class SkipFirstStep(Reference):
    """An off-by-one: undoes steps refused-1 .. 1 and forgets step 0 (the order stays created)."""

    def _compensate(self, saga_id, saga, refused):
        saga["phase"] = "compensating"
        saga["undo"] = list(range(refused - 1, 0, -1))
        self._next_compensation(saga_id, saga)


class ReportEarly(Reference):
    """Tells the customer "cancelled" as soon as a step is refused, before the compensations are done."""

    def _compensate(self, saga_id, saga, refused):
        self.report_compensated(saga_id)
        super()._compensate(saga_id, saga, refused)

    def _next_compensation(self, saga_id, saga):
        if saga["undo"]:
            self._send(saga_id)
        else:
            saga["phase"] = "done"


class SlowResend(Reference):
    """Correct, but resends only after a second: every lost message costs its saga a second."""

    def _send(self, saga_id):
        compensate, step = self._current(self.sagas[saga_id])
        self.send_command(saga_id, step, compensate)
        self.set_timer(1000.0, self._resend, saga_id, (compensate, step))


class GiveUpAfterThreeTimeouts(Reference):
    """Chapter 4's orchestrator: after three unanswered attempts at a step it compensates, the unanswered
    step included, although that step may never have run (here a timeout only means "not yet")."""

    def _resend(self, saga_id, waiting_for):
        saga = self.sagas[saga_id]
        if saga["phase"] == "forward" and self._current(saga) == waiting_for:
            timeouts = saga.setdefault("timeouts", {})
            timeouts[saga["step"]] = timeouts.get(saga["step"], 0) + 1
            if timeouts[saga["step"]] == 3:
                self._compensate(saga_id, saga, saga["step"] + 1)
                return
        super()._resend(saga_id, waiting_for)
