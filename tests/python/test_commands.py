#!/usr/bin/python3
"""Commands the broker must refuse, crafted by an independent client: each refusal with its
exact code and reason, and nothing stored or changed by it; then the HTTP endpoint and
spbe-broker --rotate-key's errors. Usage: test_commands.py BROKER_BIN GEN_DIR
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nacl.signing  # noqa: E402
import spbeclient  # noqa: E402
from spbeclient import Client, free_port, new_identity, read_identity, sign  # noqa: E402

pb = spbeclient.load_proto(sys.argv[2])
BROKER = sys.argv[1]
results = spbeclient.Results()
check = results.check
ODD_CLIENT = 'py" b"c=d \\" e\\\nts=forged level=error'


def refused(name, reply, code, reason):
    """A refusal with exactly this code and reason."""
    return check(name, reply.code == code and reply.error == reason,
                 "%s %r" % (pb.ErrorCode.Name(reply.code), reply.error))


def accepted(name, reply):
    return check(name, reply.code == pb.OK, "%s %r" % (pb.ErrorCode.Name(reply.code), reply.error))


def http(port, path, method="GET"):
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), method=method,
                                 data=b"x" if method == "POST" else None)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def add_member(admin, identity, **rights):
    return admin.call("member_add", pb.MemberAdd(
        name=identity["member"], public_key=bytes.fromhex(identity["public_key"]),
        rights=pb.MemberRights(**rights)))


def absent(admin, name):
    return admin.call("member_get", pb.MemberGet(name=name)).code == pb.NOT_FOUND


def frames_and_registry(admin, a, work):
    """Messages with no command in them, and registry changes with bad fields."""
    a.sock.send_multipart([pb.Command(request_id=7).SerializeToString()])
    reply, _ = a.reply(7)
    refused("a command with no body gets BAD_REQUEST", reply, pb.BAD_REQUEST,
            "command has no body")
    a.sock.send_multipart([b"\xff\xff\xff"])
    reply, _ = a.reply(0)
    refused("a control frame that is not a Command gets BAD_REQUEST", reply, pb.BAD_REQUEST,
            "control frame is not a Command")
    refused("publish without a body frame", a.call("publish", pb.Publish()), pb.BAD_REQUEST,
            "this command needs a body frame")

    bad_key = new_identity("uji/kunci-nol")
    bad_key["public_key"] = "00" * 32
    refused("member add with a key that is no Ed25519 point", add_member(admin, bad_key),
            pb.BAD_REQUEST, "public key must be a valid Ed25519 key of 32 bytes")
    check("... and the member is not stored", absent(admin, "uji/kunci-nol"))
    for field, pattern in (("subscribe", "ikn..x"), ("serve", "Layanan"), ("call", "a.>.b")):
        who = new_identity("uji/hak-" + field)
        refused("member add with an invalid %s pattern" % field,
                add_member(admin, who, **{field: [pattern]}), pb.BAD_REQUEST,
                "rights contain an invalid topic pattern")
        check("... and the member is not stored", absent(admin, who["member"]))
    who = new_identity("uji/peran")
    refused("member add with a role other than admin and ops",
            add_member(admin, who, roles=["ops", "superuser"]), pb.BAD_REQUEST,
            "roles are admin and ops")
    check("... and the member is not stored", absent(admin, "uji/peran"))
    bare = new_identity("uji/tanpa-hak")
    reply = admin.call("member_add", pb.MemberAdd(
        name=bare["member"], public_key=bytes.fromhex(bare["public_key"])))
    accepted("member add without rights is a member with none", reply)
    got = admin.call("member_get", pb.MemberGet(name="uji/tanpa-hak")).member.member
    check("... and it has no right at all",
          not got.rights.publish and not got.rights.subscribe and not got.rights.roles)


def rotation(admin, a):
    target = new_identity("uji/putar")
    accepted("a member to rotate", add_member(admin, target, publish=["ikn.putar"]))
    old_key = bytes.fromhex(target["public_key"])
    refused("rotate to a key that is no Ed25519 point",
            admin.call("member_rotate", pb.MemberRotate(name="uji/putar",
                                                         public_key=b"\0" * 32)),
            pb.BAD_REQUEST, "the new key must be an Ed25519 public key (32 bytes)")
    fresh = new_identity("uji/putar")
    fresh_key = bytes.fromhex(fresh["public_key"])
    stranger = nacl.signing.SigningKey(os.urandom(32))
    wrong = sign(b"spbe.v1.keyrotation", b"uji/putar" + fresh_key, stranger)
    refused("an admin's rotation with a proof by another key",
            admin.call("member_rotate", pb.MemberRotate(name="uji/putar", public_key=fresh_key,
                                                         proof=wrong)),
            pb.BAD_SIGNATURE, "the proof does not verify with the new key")
    got = admin.call("member_get", pb.MemberGet(name="uji/putar")).member.member
    check("... and the key has not changed", got.public_key == old_key and not got.keys)
    proof = sign(b"spbe.v1.keyrotation", b"uji/putar" + fresh_key,
                 nacl.signing.SigningKey(bytes.fromhex(fresh["secret_key"])[:32]))
    reply = admin.call("member_rotate", pb.MemberRotate(name="uji/putar", public_key=fresh_key,
                                                         proof=proof, reason="laptop hilang"))
    accepted("an admin's rotation with the new key's proof", reply)
    m = reply.member.member
    check("... keeps the old key with the reason given",
          m.public_key == fresh_key and len(m.keys) == 2 and m.keys[0].public_key == old_key and
          m.keys[0].reason == "laptop hilang" and m.keys[1].valid_until_ns == 0)


def revocation(admin, a, r):
    accepted("the member to revoke has a session", r.call("ping", pb.Ping()))
    reply = admin.call("member_revoke", pb.MemberRevoke(name=r.member, reason="pindah instansi"))
    accepted("revoke with a reason", reply)
    check("... the reason is kept", reply.member.member.revoked and
          reply.member.member.revoke_reason == "pindah instansi")
    ev, _ = r.event("goodbye")
    check("... the live session is told REVOKED", ev.goodbye.code == pb.REVOKED)
    refused("the revoked session's ping", r.call("ping", pb.Ping()), pb.REVOKED,
            "member has been revoked")
    refused("the revoked session's publish",
            r.publish(r.signed_message("ikn.cabut", b"x")), pb.REVOKED,
            "member has been revoked")
    accepted("revoking it again while its session is still there",
             admin.call("member_revoke", pb.MemberRevoke(name=r.member)))
    got = admin.call("member_get", pb.MemberGet(name=r.member)).member.member
    check("... stays revoked", got.revoked)
    refused("a message naming a revoked sender", a.publish(
        a.signed_message("ikn.a.x", b"x", sender=r.member)), pb.REVOKED,
        "sender has been revoked")


def listings(a, ops):
    refused("a plain member lists sessions", a.call("session_list", pb.SessionList()),
            pb.FORBIDDEN, "listing sessions needs the ops or admin role")
    refused("a plain member lists members", a.call("member_list", pb.MemberList()),
            pb.FORBIDDEN, "listing members needs the ops or admin role")
    reply = ops.call("member_list", pb.MemberList())
    accepted("an ops member lists members", reply)
    names = [m.name for m in reply.members.members]
    check("... every member, with rights", "instansi/a" in names and "uji/tanpa-hak" in names and
          any(m.rights.publish for m in reply.members.members))


def services(a, b):
    for name in ("Bad Name", "$sys.x"):
        refused("serve %r" % name, a.call("serve", pb.Serve(service=name)), pb.INVALID_TOPIC,
                "service name is not valid (topic syntax, not $sys.)")
    refused("unserve $sys.svc", a.call("unserve", pb.Unserve(service="$sys.svc")),
            pb.INVALID_TOPIC, "service name is not valid (topic syntax, not $sys.)")
    refused("unserve a service never served", a.call("unserve", pb.Unserve(service="hitung")),
            pb.NOT_FOUND, "this session does not serve the service")
    accepted("serve hitung", a.call("serve", pb.Serve(service="hitung")))
    accepted("unserve hitung", a.call("unserve", pb.Unserve(service="hitung")))
    refused("unserve it a second time", a.call("unserve", pb.Unserve(service="hitung")),
            pb.NOT_FOUND, "this session does not serve the service")

    def request(service, topic, timeout_ms=20000):
        return b.call("request", pb.Request(service=service, timeout_ms=timeout_ms),
                      b.signed_message(topic, b"2+2"))

    refused("a request when nobody serves any more", request("hitung", "$sys.svc.hitung"),
            pb.UNAVAILABLE, "no member serves this service now")
    accepted("serve hitung again", a.call("serve", pb.Serve(service="hitung")))
    for name in ("Bad", "$sys.x"):
        refused("a request to service %r" % name, request(name, "$sys.svc.hitung"),
                pb.INVALID_TOPIC, "service name is not valid (topic syntax, not $sys.)")
    refused("a request whose topic is another service's", request("hitung", "$sys.svc.lain"),
            pb.BAD_REQUEST, "a request's topic must be $sys.svc.<service>")
    refused("a request waiting more than 300000 ms",
            request("hitung", "$sys.svc.hitung", 300001), pb.BAD_REQUEST,
            "timeout is at most 300000 ms")

    req_id = os.urandom(16)
    rid = b.send("request", pb.Request(service="hitung", timeout_ms=20000),
                 b.signed_message("$sys.svc.hitung", b"2+2", msg_id=req_id))
    ev, body = a.event("request")
    ref = ev.request.request_ref
    check("the server gets the request", ev.request.service == "hitung" and body is not None)

    def respond(client, topic, correlation):
        return client.call("respond", pb.Respond(request_ref=ref),
                           client.signed_message(topic, b"4", correlation_id=correlation))

    refused("a reply from a session the request was not sent to",
            respond(b, "$sys.svc.hitung", req_id), pb.FORBIDDEN,
            "the request was sent to another session")
    refused("a reply on another topic", respond(a, "$sys.svc.lain", req_id), pb.BAD_REQUEST,
            "a reply's topic must be the request's $sys.svc.<service>")
    for what, corr in (("of 3 bytes", b"abc"), ("of another message", os.urandom(16))):
        refused("a reply whose correlation id is %s" % what,
                respond(a, "$sys.svc.hitung", corr), pb.BAD_REQUEST,
                "a reply's correlation id must be the request's message id")
    accepted("the right reply", respond(a, "$sys.svc.hitung", req_id))
    reply, body = b.reply(rid)
    check("the caller gets the one right reply",
          reply.code == pb.OK and reply.response.server == "instansi/a" and body is not None)

    refused("publishing to a $sys. topic", a.publish(a.signed_message("$sys.x", b"x")),
            pb.FORBIDDEN, "topics beginning $sys. are the broker's own")
    # batch signatures, built here independently of libspbe from docs/protocol.md
    batch = a.signed_batch("ikn.batch.a", [b"satu", b"dua", b"tiga", b"empat", b"lima"])
    for i, raw in enumerate(batch):
        accepted("batch-signed message %d of 5" % (i + 1), a.publish(raw))
    moved = pb.SignedMessage.FromString(a.signed_batch("ikn.batch.a", [b"x", b"y", b"z"])[0])
    moved.batch.index = 1
    refused("a batch proof moved to another index", a.publish(moved.SerializeToString()),
            pb.BAD_SIGNATURE, "signature does not verify with the sender's key")
    refused("a batch-signed message without its proof",
            a.publish(a.signed_message("ikn.a.x", b"x", batch=pb.BatchProof(index=0, size=1))),
            pb.BAD_SIGNATURE, "signature does not verify with the sender's key")
    refused("a batch of size 0", a.publish(a.signed_message(
        "ikn.a.x", b"x", batch=pb.BatchProof(index=0, size=0))),
        pb.BAD_REQUEST, "batch size must be 1 to 1048576")
    refused("a batch index past its size", a.publish(a.signed_message(
        "ikn.a.x", b"x", batch=pb.BatchProof(index=3, size=3))),
        pb.BAD_REQUEST, "batch index must be below the batch size")
    refused("a batch path entry of 31 bytes", a.publish(a.signed_message(
        "ikn.a.x", b"x", batch=pb.BatchProof(index=0, size=2, path=[b"\0" * 31]))),
        pb.BAD_REQUEST, "batch path entries must be 32 bytes")


def subscriptions(a, b):
    accepted("publish ikn.a.satu", a.publish(a.signed_message("ikn.a.satu", b"1")))
    accepted("publish ikn.a.satu again", a.publish(a.signed_message("ikn.a.satu", b"2")))
    why = "resume positions must name topics the pattern matches (at most 1024)"
    for what, topic in (("an invalid topic", "ikn..a"), ("a topic the pattern misses", "ikn.b.x")):
        refused("resume at %s" % what, a.call("subscribe", pb.Subscribe(
            pattern="ikn.a.>", start=pb.START_NEW,
            resume=[pb.TopicPosition(topic=topic, next_sequence=1)])), pb.BAD_REQUEST, why)
    reply = a.call("subscribe", pb.Subscribe(
        pattern="ikn.a.>", start=pb.START_NEW,
        resume=[pb.TopicPosition(topic="ikn.a.lain", next_sequence=5),
                pb.TopicPosition(topic="ikn.a.satu", next_sequence=0)]))
    accepted("resume at sequence 0 of one topic and at a topic not there yet", reply)
    sub = reply.subscribed.subscription_id
    ev, _ = a.event("delivery")
    check("... sequence 0 means from the first", ev.delivery.topic == "ikn.a.satu" and
          ev.delivery.sequence == 1)
    ev, _ = a.event("delivery")
    check("... then the next", ev.delivery.sequence == 2)
    refused("another session unsubscribes it", b.call("unsubscribe", pb.Unsubscribe(
        subscription_id=sub)), pb.NOT_FOUND, "no such subscription")
    accepted("its own session unsubscribes it",
             a.call("unsubscribe", pb.Unsubscribe(subscription_id=sub)))
    refused("... once", a.call("unsubscribe", pb.Unsubscribe(subscription_id=sub)),
            pb.NOT_FOUND, "no such subscription")


def consumers(admin, a, b):
    def consume(client, **cfg):
        return client.call("consume", pb.Consume(config=pb.ConsumerConfig(**cfg)))

    def gone(name):
        return admin.call("consumer_get", pb.ConsumerGet(name=name))

    refused("consume without a config", a.call("consume", pb.Consume()), pb.BAD_REQUEST,
            "consumer name must be 1 to 64 of [a-z0-9_-]")
    refused("a consumer name with a quote, a backslash and a newline",
            consume(a, name='x y"z=1 \\ q\nlevel=error', pattern="ikn.a.>"), pb.BAD_REQUEST,
            "consumer name must be 1 to 64 of [a-z0-9_-]")
    refused("a new consumer on a pattern the member may not read",
            consume(b, name="curi", pattern="ikn.a.>"), pb.FORBIDDEN,
            "no right to subscribe to this pattern")
    refused("... is not created", gone("curi"), pb.NOT_FOUND, "no such consumer")
    bad = (("start at a time without the time", dict(start=pb.START_TIME, start_time_ns=0),
            "start at a time needs start_time_ns"),
           ("ack wait of 99 ms", dict(ack_wait_ms=99), "ack wait must be 100 ms to 1 day"),
           ("ack wait over a day", dict(ack_wait_ms=86400001), "ack wait must be 100 ms to 1 day"),
           ("10001 deliveries", dict(max_deliveries=10001),
            "max deliveries is at most 10000, max in flight at most 100000"),
           ("100001 in flight", dict(max_in_flight=100001),
            "max deliveries is at most 10000, max in flight at most 100000"))
    for what, fields, reason in bad:
        refused("a consumer with " + what, consume(a, name="salah", pattern="ikn.a.>", **fields),
                pb.BAD_REQUEST, reason)
        refused("... is not created", gone("salah"), pb.NOT_FOUND, "no such consumer")

    reply = consume(a, name="olah", pattern="ikn.a.>", start=pb.START_FIRST, max_deliveries=1)
    accepted("a consumer from the first message", reply)
    attachment = reply.subscribed.subscription_id
    refused("the consumer again with another pattern",
            consume(a, name="olah", pattern="ikn.>"), pb.BAD_REQUEST,
            "the consumer exists with another pattern")
    refused("a member that may not read its pattern asks for it",
            b.call("consumer_get", pb.ConsumerGet(name="olah")), pb.FORBIDDEN,
            "no right to see this consumer")
    refused("... acknowledges on it", b.call("ack", pb.Ack(consumer="olah", items=[
        pb.AckItem(topic="ikn.a.satu", sequence=1)])), pb.FORBIDDEN,
        "no right to the consumer's pattern")
    refused("... deletes it", b.call("consumer_delete", pb.ConsumerDelete(name="olah")),
            pb.FORBIDDEN, "only the consumer's owner or an admin may delete it")
    for name in ("olah", "hantu"):
        refused("... purges the dead letters of %s" % name,
                b.call("dlq_purge", pb.DlqPurge(consumer=name)), pb.FORBIDDEN,
                "only the consumer's owner or an admin may change its dead letters")
    refused("dead letters of an invalid consumer name",
            a.call("dlq_purge", pb.DlqPurge(consumer="Bukan Nama")), pb.BAD_REQUEST,
            "consumer name must be 1 to 64 of [a-z0-9_-]")

    ev, _ = a.event("delivery")
    ev2, _ = a.event("delivery")
    check("the consumer delivers both messages",
          ev.delivery.consumer == "olah" and ev2.delivery.sequence == 2)
    reply = a.call("ack", pb.Ack(consumer="olah", items=[
        pb.AckItem(topic="ikn.a.satu", sequence=9), pb.AckItem(topic="ikn.a.satu", sequence=8)]))
    check("acknowledging two messages that are not pending names the first failure",
          reply.code != pb.OK and
          reply.error == "the message is not pending for this consumer (acknowledged already?)",
          pb.ErrorCode.Name(reply.code))
    accepted("terminate one: it becomes a dead letter", a.call("ack", pb.Ack(
        consumer="olah", items=[pb.AckItem(topic="ikn.a.satu", sequence=1, kind=pb.TERM)])))
    accepted("acknowledge the other", a.call("ack", pb.Ack(
        consumer="olah", items=[pb.AckItem(topic="ikn.a.satu", sequence=2)])))
    dlq = None
    for _ in range(250):
        dlq = admin.call("topic_get", pb.TopicGet(topic="$sys.dlq.olah"))
        if dlq.code == pb.OK and dlq.topic.messages == 1:
            break
        time.sleep(0.02)
    check("the dead letter is stored", dlq.code == pb.OK and dlq.topic.messages == 1)
    reply = a.call("dlq_replay", pb.DlqReplay(consumer="olah", count=20000))
    check("replay with a count over the most moves what there is",
          reply.code == pb.OK and reply.count.count == 1)
    ev, _ = a.event("delivery")
    check("... and the replayed message comes again", ev.delivery.consumer == "olah" and
          ev.delivery.topic == "ikn.a.satu" and ev.delivery.sequence == 3)
    accepted("terminate it again", a.call("ack", pb.Ack(
        consumer="olah", items=[pb.AckItem(topic="ikn.a.satu", sequence=3, kind=pb.TERM)])))
    for _ in range(250):
        dlq = admin.call("topic_get", pb.TopicGet(topic="$sys.dlq.olah"))
        if dlq.code == pb.OK and dlq.topic.messages == 1:
            break
        time.sleep(0.02)
    reply = a.call("dlq_purge", pb.DlqPurge(consumer="olah"))
    check("purge drops the dead letter", reply.code == pb.OK and reply.count.count == 1)
    reply = a.call("dlq_purge", pb.DlqPurge(consumer="olah"))
    check("purge of an emptied dead-letter topic drops nothing",
          reply.code == pb.OK and reply.count.count == 0)
    accepted("a second consumer", consume(a, name="olah-dua", pattern="ikn.a.satu"))
    accepted("detach from a consumer by its attachment id",
             a.call("unsubscribe", pb.Unsubscribe(subscription_id=attachment)))
    return attachment


def delivery_receipts(a, b):
    def receipt(member="instansi/a", topic="ikn.a.satu", up_to=1, key=None):
        dr = pb.DeliveryReceipt(member=member, topic=topic, up_to=up_to,
                                signed_ns=time.time_ns()).SerializeToString()
        return pb.SignedDeliveryReceipt(receipt=dr, signature=sign(b"spbe.v1.delivery", dr,
                                                                   key or a.key))

    def confirm(r):
        return a.call("delivery_ack", pb.DeliveryAck(receipt=r) if r else pb.DeliveryAck())

    refused("a delivery confirmation with no receipt", confirm(None), pb.BAD_REQUEST,
            "a delivery receipt is required")
    refused("a receipt signed by another key",
            confirm(receipt(key=nacl.signing.SigningKey(os.urandom(32)))), pb.BAD_SIGNATURE,
            "the receipt's signature does not verify with your key")
    refused("a receipt that speaks for another member", confirm(receipt(member="instansi/b")),
            pb.FORBIDDEN, "a receipt speaks for the session's own member")
    refused("a receipt for an invalid topic", confirm(receipt(topic="Ikn A")), pb.INVALID_TOPIC,
            "invalid topic")
    refused("a receipt up to 0", confirm(receipt(up_to=0)), pb.BAD_REQUEST,
            "up_to must be a sequence the topic has")
    refused("a receipt beyond the topic", confirm(receipt(up_to=99)), pb.BAD_REQUEST,
            "up_to must be a sequence the topic has")
    reply = confirm(receipt(up_to=2))
    check("a good receipt is logged as a leaf", reply.code == pb.OK and reply.count.count > 0,
          reply.error)


def http_checks(port, revoked):
    status, body = http(port, "/metrics", "POST")
    check("POST gets 405", status == 405 and body == "only GET\n", status)
    status, _ = http(port, "/healthz", "HEAD")
    check("HEAD is served", status == 200, status)
    status, body = http(port, "/healthz")
    check("/healthz says ok", status == 200 and body == "ok\n", body)
    status, body = http(port, "/readyz")
    check("/readyz says ready", status == 200 and body == "ready\n", body)
    status, body = http(port, "/nothing-here")
    check("an unknown path gets 404 with the paths there are",
          status == 404 and body.startswith("not found: /metrics /healthz /readyz"), status)
    status, body = http(port, "/v1/members")
    check("/v1/members shows the revoked member as revoked",
          status == 200 and ('{"name":"%s","public_key":' % revoked) in body and
          body.split('"name":"%s"' % revoked)[1].split("}")[0].count('"status":"revoked"') == 1,
          body[:200])
    for _ in range(250):  # the I/O thread refreshes the snapshot every 250 ms
        status, body = http(port, "/v1/consumers")
        if "olah-dua" in body:
            break
        time.sleep(0.02)
    check("/v1/consumers lists both consumers", status == 200 and '"name":"olah"' in body and
          ',{"name":"olah-dua"' in body, body[:200])
    status, body = http(port, "/v1/topics")
    check("/v1/topics shows the emptied dead-letter topic with no last acceptance",
          status == 200 and '{"name":"$sys.dlq.olah","first_sequence":' in body and
          body.split('"name":"$sys.dlq.olah"')[1].split("}")[0].endswith(
              '"messages":0,"bytes":0,"last_accepted":null'), body[:300])


def rotate_key_errors(work, data):
    def rotate(data_dir):
        p = subprocess.run([BROKER, "--rotate-key", "--data", data_dir], capture_output=True,
                           text=True, timeout=60)
        return p.returncode, p.stdout, p.stderr

    empty = os.path.join(work, "kosong")
    os.mkdir(empty)
    code, _, err = rotate(empty)
    check("--rotate-key with no key says it cannot read it", code == 1 and err ==
          "spbe-broker: cannot read %s/broker.key: No such file or directory\n" % empty, err)
    public_only = os.path.join(work, "publik")
    os.mkdir(public_only)
    shutil.copy(os.path.join(data, "broker.pub"), os.path.join(public_only, "broker.key"))
    code, _, err = rotate(public_only)
    check("--rotate-key with a key that has no secret", code == 1 and err ==
          "spbe-broker: %s/broker.key holds no secret key\n" % public_only, err)

    os.remove(os.path.join(data, "admin.key"))
    code, out, err = rotate(data)
    check("--rotate-key without admin.key still rotates",
          code == 0 and out.startswith("broker key rotated at leaf ") and
          not os.path.exists(os.path.join(data, "admin.key")), err)
    os.remove(os.path.join(data, "broker.pub"))
    os.mkdir(os.path.join(data, "broker.pub"))
    code, _, err = rotate(data)
    check("--rotate-key that cannot write broker.pub fails saying so", code == 1 and err ==
          "spbe-broker: cannot write %s/broker.pub: Is a directory\n" % data, err)


def main():
    work = tempfile.mkdtemp(prefix="spbe-cmd-")
    port = free_port()
    broker, endpoint, data, log_path = spbeclient.start_broker(
        BROKER, work, ["--http", "127.0.0.1:%d" % port, "--log-json"])
    clients = []
    try:
        broker_key = bytes.fromhex(read_identity(os.path.join(data, "broker.pub"))["public_key"])

        def connect(identity):
            c = Client(endpoint, identity, broker_key)
            clients.append(c)
            check("%s is welcomed" % identity["member"], c.hello().code == pb.OK)
            return c

        admin = connect(read_identity(os.path.join(data, "admin.key")))
        odd = Client(endpoint, read_identity(os.path.join(data, "admin.key")), broker_key)
        clients.append(odd)
        check("a hello whose client text has quotes, backslashes and a newline", odd.call(
            "hello", pb.Hello(protocol_version=1, member="spbe/admin",
                              client=ODD_CLIENT)).code == pb.OK)
        ids = {n: new_identity(n) for n in ("instansi/a", "instansi/b", "instansi/ops",
                                            "instansi/r")}
        accepted("member a", add_member(admin, ids["instansi/a"], publish=["ikn.>"],
                                        subscribe=["ikn.>"], serve=["hitung"], call=["hitung"]))
        accepted("member b", add_member(admin, ids["instansi/b"], publish=["ikn.b.>"],
                                        subscribe=["ikn.b.>"], call=["hitung"]))
        accepted("an ops member", add_member(admin, ids["instansi/ops"], roles=["ops"]))
        accepted("a member to revoke", add_member(admin, ids["instansi/r"], publish=["ikn.>"]))
        a, b = connect(ids["instansi/a"]), connect(ids["instansi/b"])
        ops, r = connect(ids["instansi/ops"]), connect(ids["instansi/r"])

        frames_and_registry(admin, a, work)
        rotation(admin, a)
        revocation(admin, a, r)
        listings(a, ops)
        services(a, b)
        subscriptions(a, b)
        consumers(admin, a, b)
        delivery_receipts(a, b)
        accepted("the session still serves after every refusal", a.call("ping", pb.Ping()))
        http_checks(port, "instansi/r")
        for c in clients:
            c.close()
        clients = []
    finally:
        for c in clients:
            c.close()
        broker.terminate()
        code = broker.wait(10)
        check("broker stops cleanly on SIGTERM", code == 0)
    lines = open(log_path).read().splitlines()
    bad = [line for line in lines if line.startswith("{")]
    try:
        for line in bad:
            json.loads(line)
        ok = bool(bad)
    except ValueError as e:
        ok = False
        print(e, line)
    events = [json.loads(line) for line in bad] if ok else []
    odd = [e for e in events
           if e["event"] == "session_opened" and e["client"].startswith('py"')]
    check("a client text is logged as sent, its newline made '?'",
          len(odd) == 1 and odd[0]["client"] == ODD_CLIENT.replace("\n", "?") and
          "ts=forged" not in odd[0], odd)
    names = [e.get("consumer") for e in events if e["event"] == "consume_rejected"]
    check("an invalid consumer name is logged as one word", "x?y?z?1???q?level?error" in names,
          names)
    check("every log line is JSON with --log-json", ok and len(bad) == len(lines),
          [line for line in lines if not line.startswith("{")][:3])
    rotate_key_errors(work, data)
    shutil.rmtree(work, ignore_errors=True)
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
