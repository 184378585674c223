"""How the kit reads pods across looks (rayscale/providers/pod_health.py): what a kubelet
retries is waited for, what a registry refused is final at once, what lasts is reported,
and heads the operator replaces again and again are a crash loop. Pods are the Kubernetes
client's own models, as the API returns them."""

from __future__ import annotations

from kubernetes import client

from rayscale.providers.pod_health import STUCK_S, PodWatch


def _pod(name: str, waiting: tuple[str, str] | None = None, exited: int | None = None):
    if exited is not None:
        state = client.V1ContainerState(
            terminated=client.V1ContainerStateTerminated(exit_code=exited, reason="Error")
        )
    elif waiting:
        state = client.V1ContainerState(
            waiting=client.V1ContainerStateWaiting(reason=waiting[0], message=waiting[1])
        )
    else:
        state = client.V1ContainerState(running=client.V1ContainerStateRunning())
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1PodSpec(containers=[client.V1Container(name="ray-head", image="x")]),
        status=client.V1PodStatus(
            phase="Pending" if waiting else "Running",
            container_statuses=[
                client.V1ContainerStatus(
                    name="ray-head", ready=False, restart_count=0, image="x", image_id="",
                    state=state,
                )
            ],
        ),
    )  # fmt: skip


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


TIMEOUT = (
    "ErrImagePull",
    'rpc error: failed to pull and unpack image "r/x": dial tcp: i/o timeout',
)
DENIED = ("ErrImagePull", 'rpc error: failed to resolve reference "r/x": pull access denied')
BACKOFF = ("ImagePullBackOff", 'Back-off pulling image "r/x"')


def test_a_slow_registry_is_waited_for_and_reported_once_it_lasts():
    clock = Clock()
    w = PodWatch(lambda p: "", clock=clock)
    assert w.verdict(_pod("h", TIMEOUT)) is None
    clock.t = 30
    assert w.verdict(_pod("h", BACKOFF)) is None  # the back-off between two tries
    clock.t = STUCK_S + 1
    said = w.verdict(_pod("h", BACKOFF))
    # Reported in the words of the last failed pull, not the back-off's.
    assert said and "i/o timeout" in said and said.endswith(f"for {STUCK_S + 1:.0f} s")


def test_a_registry_that_has_no_such_image_is_final_at_once():
    w = PodWatch(lambda p: "", clock=Clock())
    assert "pull access denied" in w.verdict(_pod("h", DENIED))
    # Seen first during the back-off: final once a try's words are seen.
    w = PodWatch(lambda p: "", clock=Clock())
    assert w.verdict(_pod("h", BACKOFF)) is None
    assert w.verdict(_pod("h", DENIED)) and w.verdict(_pod("h", BACKOFF))
    w = PodWatch(lambda p: "", clock=Clock())
    assert (
        w.verdict(_pod("h", ("InvalidImageName", "bad")))
        == "container ray-head: InvalidImageName: bad"
    )


def test_a_secret_not_there_yet_is_retried_as_the_kubelet_does():
    clock = Clock()
    w = PodWatch(lambda p: "", clock=clock)
    missing = ("CreateContainerConfigError", 'secret "rs" not found')
    assert w.verdict(_pod("h", missing)) is None
    clock.t = STUCK_S
    assert 'secret "rs" not found, for 180 s' in w.verdict(_pod("h", missing))


def test_heads_replaced_again_and_again_are_a_crash_loop_with_their_last_lines():
    logs = {"h1": "", "h2": "starting\n/bin/sh: 1: ray: not found\n"}
    w = PodWatch(lambda p: logs[p.metadata.name], clock=Clock())
    w.look([_pod("h1", exited=127)])
    assert w.crash_loop(2) is None  # one death: the operator makes a new head
    w.look([_pod("h1", exited=127), _pod("h2", exited=127)])
    w.look([_pod("h2", exited=127)])  # the same pod seen twice is one death
    said = w.crash_loop(2)
    assert said.startswith("its Ray container exited 127 (Error) in 2 pods in a row")
    assert said.endswith("its last log lines: starting | /bin/sh: 1: ray: not found")
