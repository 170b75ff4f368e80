# stepsync: an aggregate Ansible callback that writes the run's result as JSON to the file
# named by STEPSYNC_RESULT_FILE, so `runner: ansible` gives stepdefs the same `result` as
# the built-in runner. The default stdout callback keeps writing the usual log.
from __future__ import annotations

import json
import os

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: stepsync_result
    type: aggregate
    short_description: write the run's result as JSON for stepsync
    description: Counts, set_stats data, facts and the first failure of a playbook run.
"""


def _res(result):
    r = getattr(result, "result", None)
    if r is None:
        r = getattr(result, "_result", {})
    return r or {}


def _host(result):
    h = getattr(result, "host", None) or getattr(result, "_host", None)
    return h.get_name() if h is not None else ""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "stepsync_result"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self):
        super().__init__()
        self.facts = {}
        self.message = None
        self.failed_task = None

    def _facts(self, result):
        facts = _res(result).get("ansible_facts")
        if isinstance(facts, dict):
            self.facts.setdefault(_host(result), {}).update(facts)

    def v2_runner_on_ok(self, result, **kwargs):
        self._facts(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        if ignore_errors or self.message is not None:
            return
        r = _res(result)
        msg = r.get("msg") or "task failed"
        # As the built-in runner says it: a command's rc and its last line on stderr (else
        # stdout), usually the reason; the run log has the rest.
        if isinstance(r.get("rc"), int):
            msg = "%s (rc %d)" % (msg, r["rc"])
            for stream in ("stderr", "stdout"):
                lines = [l.strip() for l in str(r.get(stream) or "").splitlines() if l.strip()]
                if lines:
                    msg = "%s: %s" % (msg, lines[-1])
                    break
        task = getattr(result, "task_name", None) or getattr(getattr(result, "_task", None), "name", "")
        self.message = "%s: %s: %s" % (_host(result), task, msg)

    def v2_runner_on_unreachable(self, result, **kwargs):
        if self.message is None:
            self.message = "%s: unreachable: %s" % (_host(result), _res(result).get("msg", ""))

    def v2_playbook_on_stats(self, stats):
        totals = {"ok": 0, "changed": 0, "failed": 0, "skipped": 0, "unreachable": 0}
        hosts = {}
        for host in sorted(stats.processed.keys()):
            s = stats.summarize(host)
            counts = {
                "ok": s.get("ok", 0),
                "changed": s.get("changed", 0),
                "failed": s.get("failures", 0),
                "skipped": s.get("skipped", 0),
                "unreachable": s.get("unreachable", 0),
            }
            hosts[host] = counts
            for k in totals:
                totals[k] += counts[k]
        custom = getattr(stats, "custom", {}) or {}
        run_stats = dict(custom.get("_run", {}))
        for host, data in custom.items():
            if host != "_run" and isinstance(data, dict):
                run_stats.update(data)
        facts = {}
        if len(self.facts) == 1:
            facts = next(iter(self.facts.values()))
        out = dict(totals)
        out.update({"hosts": hosts, "stats": run_stats, "facts": facts, "message": self.message})
        path = os.environ.get("STEPSYNC_RESULT_FILE")
        if path:
            with open(path, "w") as f:
                json.dump(out, f, default=str)
