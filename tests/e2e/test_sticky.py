"""Sticky hashing: the same key lands on the same variant on every worker, every gateway, after
restarts, as the README's hash predicts, and raising the weight only moves users to canary."""

from harness import Client, h2_get
from sticky_hash import is_canary

PUBLIC = "shop.example.com"
USERS = [f"user-{i}" for i in range(300)]


def sticky_route(weight, sticky, **extra):
    return {"host": PUBLIC, "primary": {}, "canary": {}, "canary_weight": weight, "sticky": sticky, **extra}


def assignments(client: Client, users, key_header="x-user-id", fresh_connections=False) -> dict:
    result = {}
    for user in users:
        if fresh_connections:
            client.reconnect()
        result[user] = client.get(PUBLIC, [(key_header, user)]).upstream
    return result


def predicted(users, weight, salt=PUBLIC) -> dict:
    return {u: "canary" if is_canary(salt.encode(), u.encode(), weight) else "primary" for u in users}


def test_sticky_header_follows_the_documented_hash(gateway):
    client = gateway({"routes": [sticky_route(30, {"header": "x-user-id"})]})
    first = assignments(client, USERS)
    assert first == predicted(USERS, 30)
    assert assignments(client, USERS) == first, "repeats must not change the variant"
    canary_share = sum(v == "canary" for v in first.values()) / len(USERS)
    assert 0.2 < canary_share < 0.4


def test_same_assignment_on_two_gateways_with_different_worker_counts(gateway):
    config = {"routes": [sticky_route(50, {"header": "x-user-id"})]}
    one_worker = gateway(config, concurrency=1)
    three_workers = gateway(config, concurrency=3)
    on_one = assignments(one_worker, USERS)
    on_three = assignments(three_workers, USERS, fresh_connections=True)
    assert on_one == on_three == predicted(USERS, 50)


def test_raising_the_weight_keeps_canary_users_on_canary(gateway):
    before = assignments(gateway({"routes": [sticky_route(10, {"header": "x-user-id"})]}), USERS)
    after = assignments(gateway({"routes": [sticky_route(30, {"header": "x-user-id"})]}), USERS)
    moved_back = [u for u in USERS if before[u] == "canary" and after[u] == "primary"]
    assert not moved_back
    assert sum(v == "canary" for v in after.values()) > sum(v == "canary" for v in before.values())
    assert after == predicted(USERS, 30)


def test_a_key_sent_twice_counts_with_its_first_value(gateway):
    # As the README's limitations say: the filter reads the first of repeated header fields.
    client = gateway({"routes": [sticky_route(50, {"header": "x-user-id"})]})
    expected = predicted(USERS[:40], 50)
    assert len(set(expected.values())) == 2, "the users must cover both variants for this test to mean anything"
    for user in USERS[:40]:
        twice = [("x-user-id", user), ("x-user-id", "someone-else")]
        assert client.get(PUBLIC, twice).upstream == expected[user], user
        assert h2_get(client.port, PUBLIC, twice).upstream == expected[user], user


def test_sticky_cookie(gateway):
    client = gateway({"routes": [sticky_route(50, {"cookie": "uid"})]})
    for user in USERS[:100]:
        response = client.get(PUBLIC, [("cookie", f"theme=dark; uid={user}; other=1")])
        assert response.upstream == predicted([user], 50)[user]


def test_sticky_client_address(gateway):
    # Every request here comes from 127.0.0.1, so all of them share one bucket.
    expected = predicted(["127.0.0.1"], 50)["127.0.0.1"]
    client = gateway({"routes": [sticky_route(50, {"client_ip": True})]})
    for _ in range(50):
        client.reconnect()
        assert client.get(PUBLIC).upstream == expected


def test_salt_overrides_the_host(gateway):
    client = gateway({"routes": [sticky_route(50, {"header": "x-user-id"}, salt="rollout-2026-11")]})
    assert assignments(client, USERS) == predicted(USERS, 50, salt="rollout-2026-11")


def test_requests_without_a_key_are_split_at_random(gateway):
    client = gateway({"routes": [sticky_route(50, {"header": "x-user-id"})]})
    seen = {client.get(PUBLIC).upstream for _ in range(100)}
    assert seen == {"primary", "canary"}
    seen_empty = {client.get(PUBLIC, [("x-user-id", "")]).upstream for _ in range(100)}
    assert seen_empty == {"primary", "canary"}
