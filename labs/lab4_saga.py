"""Lab 4: a saga orchestrator with compensation.

An order runs four steps, each at its own service, in this order: create_order
(service "orders"), reserve_stock ("stock"), charge_payment ("payment"),
schedule_shipping ("shipping"). Any step may be refused (out of stock, card
declined...); then the steps already done must be undone by their compensations,
the most recent first. You write the orchestrator (node "orch"): the lab starts
the sagas and calls start_saga(saga_id); you send the services StepCommands and
get StepReplies. Messages are lost and duplicated, the services and the
orchestrator crash. The statement, the tests and the API are in labs/README.md
(section "Lab 4"); grade with

    capsim lab grade lab4 lab4_saga.py

Hints: a command that gets no reply is resent until the reply comes (the services
are idempotent, so a repeat is safe, and they always come back). A reply may be a
duplicate, or the answer to an older resend: only act on the reply to the command
the saga is waiting for. Compensate exactly the steps whose service replied
ok=True. What must survive a crash goes in self.disk.
"""

from __future__ import annotations

from sim.labs.saga import OrchestratorBase, StepReply

RESEND_MS = 50.0   # resend an unanswered command after this long (a step takes ~11 ms: 3 ms each way, 5 of work)


class SagaOrchestrator(OrchestratorBase):
    """The orchestrator of every saga.

    Available: self.steps (each with .name and .service; len(self.steps) == 4),
    self.send_command(saga_id, step, compensate=False, attempt=0),
    self.report_completed(saga_id), self.report_compensated(saga_id),
    self.disk, self.set_timer(ms, fn, *args), self.now, self.name.
    A StepReply has saga_id, step, compensate (whether it answers a compensation),
    ok (for an action: done or refused; a compensation is always ok) and attempt
    (echoed from the command).
    """

    def boot(self):
        # Runs at start and after every recovery. A crash wiped every attribute of this object
        # (as a process loses its memory); only self.disk (a dict) survived.
        self.sagas = {}   # saga id -> where that saga is. TODO: would this survive a crash?
        # TODO: resume every saga that had not finished when the orchestrator crashed,
        # going forward or backward (compensating) from where it was.

    def start_saga(self, saga_id: str):
        # TODO: write down the new saga, send step 0's action, and resend it until it is answered.
        raise NotImplementedError("TODO: start_saga")

    def handle_StepReply(self, msg: StepReply, src: str):
        # TODO: ignore a reply that is not the one the saga waits for (a duplicate, a late answer).
        # An action done (ok): on to the next step, or report_completed after the last one.
        # An action refused: it applied nothing; compensate the steps before it, the most recent first.
        # A compensation done: on to the next one, or report_compensated after the last one.
        raise NotImplementedError("TODO: handle_StepReply")
