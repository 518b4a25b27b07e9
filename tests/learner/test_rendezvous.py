"""The learner's rendezvous port comes from outside the ephemeral range, so a process binding
port 0 in the seconds before rank 0 binds it (vLLM engines starting beside the learner)
cannot take it."""
import socket

from learner.worker import rendezvous_port


def test_rendezvous_port_is_free_and_below_the_ephemeral_range():
    low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
    ports = {rendezvous_port("127.0.0.1") for _ in range(20)}
    assert all(20000 <= p < max(20001, low) for p in ports)
    with socket.socket() as s:  # free: it binds
        s.bind(("127.0.0.1", ports.pop()))
