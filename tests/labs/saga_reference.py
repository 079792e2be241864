"""Lab 4 reference solution: a saga orchestrator with a durable log (kept out of the student material).

Each saga's progress lives in ``self.disk["sagas"]``: its phase (``forward``,
``compensating``, ``done``), the step it is running, and the steps still to undo,
most recent first. The orchestrator sends the current command and resends it every
``RESEND_MS`` until the reply to *that* command arrives (a reply to anything else
is stale and ignored); the services are idempotent, so resending is safe. A
refused step starts the compensation of the steps before it; the refused one
applied nothing. After a crash, ``boot`` resends the current command of every
unfinished saga, forward or backward.

``ReplayOrchestrator`` is a second correct design, to show that the grader does not
want the reference's: it writes down only which sagas are unfinished and, after a
crash, runs them again from step 0, relying on the services' idempotency: a step
already applied answers ok again, and the first step already undone answers
"refused" (a late action after its compensation), so the saga then compensates
exactly the steps still in effect, in reverse order.
"""

from __future__ import annotations

from sim.labs.saga import OrchestratorBase, StepReply

RESEND_MS = 50.0


class SagaOrchestrator(OrchestratorBase):
    def boot(self):
        self.sagas = self.disk.setdefault("sagas", {})   # saga id -> {"phase", "step", "undo"}: durable
        for saga_id, saga in self.sagas.items():
            if saga["phase"] != "done":
                self._send(saga_id)

    def start_saga(self, saga_id):
        self.sagas[saga_id] = {"phase": "forward", "step": 0, "undo": []}
        self._send(saga_id)

    @staticmethod
    def _current(saga):
        """(compensate, step) of the command the saga waits for."""
        if saga["phase"] == "forward":
            return False, saga["step"]
        return True, saga["undo"][0]

    def _send(self, saga_id):
        compensate, step = self._current(self.sagas[saga_id])
        self.send_command(saga_id, step, compensate)
        self.set_timer(RESEND_MS, self._resend, saga_id, (compensate, step))

    def _resend(self, saga_id, waiting_for):
        saga = self.sagas[saga_id]
        if saga["phase"] != "done" and self._current(saga) == waiting_for:
            self._send(saga_id)

    def handle_StepReply(self, msg: StepReply, src):
        saga = self.sagas.get(msg.saga_id)
        if saga is None or saga["phase"] == "done" or self._current(saga) != (msg.compensate, msg.step):
            return                                            # stale: a duplicate, or a reply to an old resend
        if msg.compensate:
            saga["undo"].pop(0)
            self._next_compensation(msg.saga_id, saga)
        elif msg.ok:
            saga["step"] += 1
            if saga["step"] == len(self.steps):
                saga["phase"] = "done"
                self.report_completed(msg.saga_id)
            else:
                self._send(msg.saga_id)
        else:
            self._compensate(msg.saga_id, saga, msg.step)

    def _compensate(self, saga_id, saga, refused):
        """The refused step applied nothing: undo the steps before it, the most recent first."""
        saga["phase"] = "compensating"
        saga["undo"] = list(range(refused - 1, -1, -1))
        self._next_compensation(saga_id, saga)

    def _next_compensation(self, saga_id, saga):
        if saga["undo"]:
            self._send(saga_id)
        else:
            saga["phase"] = "done"
            self.report_compensated(saga_id)


class ReplayOrchestrator(SagaOrchestrator):
    def boot(self):
        self.sagas = {}                                          # volatile: rebuilt by replaying
        self.unfinished = self.disk.setdefault("unfinished", {})   # saga id -> True: an ordered set
        for saga_id in self.unfinished:
            self.sagas[saga_id] = {"phase": "forward", "step": 0, "undo": []}
            self._send(saga_id)

    def start_saga(self, saga_id):
        self.unfinished[saga_id] = True
        super().start_saga(saga_id)

    def report_completed(self, saga_id):
        del self.unfinished[saga_id]
        super().report_completed(saga_id)

    def report_compensated(self, saga_id):
        del self.unfinished[saga_id]
        super().report_compensated(saga_id)
