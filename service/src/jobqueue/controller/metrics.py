"""Prometheus metrics: job counts and workers read from the database at scrape time, and
how long jobs waited in the queue before a worker claimed them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select

from jobqueue.models import Job, Worker
from jobqueue.states import JobState


def jobs_by_state(session) -> dict[str, int]:
    """How many jobs are in each state (every state, 0 for none)."""
    counts = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
    return {state.value: counts.get(state.value, 0) for state in JobState}


class _FromDatabase:
    def __init__(self, session_factory):
        self.session_factory = session_factory

    def collect(self):
        with self.session_factory() as session:
            counts = jobs_by_state(session)
            workers = session.scalars(select(Worker)).all()
            session.commit()
        by_state = GaugeMetricFamily("jobqueue_jobs", "Jobs by state", labels=["state"])
        for state, count in counts.items():
            by_state.add_metric([state], count)
        yield by_state
        yield GaugeMetricFamily("jobqueue_queue_depth", "Jobs waiting for a worker",
                                value=counts[JobState.QUEUED.value])
        set_aside = GaugeMetricFamily(
            "jobqueue_worker_quarantined_slots",
            "Job slots a worker set aside because they could not be cleaned, as of its "
            "last claim", labels=["worker"])
        for worker in workers:
            set_aside.add_metric([worker.name], worker.quarantined)
        yield set_aside


class Metrics:
    def __init__(self, session_factory):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_FromDatabase(session_factory))
        self.claim_latency = Histogram(
            "jobqueue_claim_latency_seconds", "Time from queued to claimed by a worker",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600),
            registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
