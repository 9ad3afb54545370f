#!/usr/bin/python3
"""An independent client, written from docs/protocol.md in another language.

It speaks protocol 1 to a real spbe-broker with pyzmq (CurveZMQ), PyNaCl (Ed25519) and
Python protobuf classes generated from proto/spbe/v1/spbe.proto: handshake, signed
publish, the broker's signed receipt, subscribe with replay, end-to-end verification of
the delivered bytes, refusals, and publishes gathered in one frame. Usage: test_protocol.py BROKER_BIN CLI_BIN GEN_DIR
"""
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nacl.exceptions  # noqa: E402
import nacl.signing  # noqa: E402
import spbeclient  # noqa: E402
from spbeclient import Client, read_identity, start_broker  # noqa: E402

pb = spbeclient.load_proto(sys.argv[3])
BROKER, CLI = sys.argv[1], sys.argv[2]
results = spbeclient.Results()
check = results.check


def main():
    work = tempfile.mkdtemp(prefix="spbe-py-")
    broker, endpoint, data, _ = start_broker(BROKER, work)
    try:
        env = dict(os.environ, SPBE_BROKER=endpoint)
        key = os.path.join(work, "py.key")
        subprocess.run([CLI, "keygen", "kemenpanrb/e-formasi", "-o", key], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        subprocess.run([CLI, "member", "add", "kemenpanrb/e-formasi", "--key",
                        os.path.join(data, "admin.key"), "--key-file", key + ".pub",
                        "--pub", "ikn.formasi.>", "--sub", "ikn.formasi.>"],
                       check=True, env=env, stdout=subprocess.DEVNULL)
        identity = read_identity(key)
        broker_key = bytes.fromhex(read_identity(os.path.join(data, "broker.pub"))["public_key"])
        c = Client(endpoint, identity, broker_key)

        rid = c.send("hello", pb.Hello(protocol_version=1, member=identity["member"],
                                       client="python-test"))
        reply, _ = c.reply(rid)
        check("hello is welcomed", reply.code == pb.OK and reply.WhichOneof("body") == "welcome")
        check("welcome carries the broker key", reply.welcome.broker_key == broker_key)
        check("welcome says how many publishes one frame may carry",
              reply.welcome.publish_batch == 256)

        raw = c.signed_message("ikn.formasi.dibuka", b'{"formasi":250000}')
        reply = c.publish(raw)
        check("publish gets OK", reply.code == pb.OK)
        r = reply.receipt
        nacl.signing.VerifyKey(broker_key).verify(b"spbe.v1.receipt\0" + r.receipt, r.signature)
        receipt = pb.Receipt()
        receipt.ParseFromString(r.receipt)
        check("receipt is signed by the broker and names sequence 1",
              receipt.sequence == 1 and receipt.topic == "ikn.formasi.dibuka")
        check("receipt hash is SHA-256 of the bytes sent",
              receipt.message_hash == hashlib.sha256(raw).digest())

        rid = c.send("subscribe", pb.Subscribe(pattern="ikn.formasi.>",
                                               start=pb.START_FIRST))
        reply, _ = c.reply(rid)
        check("subscribe from first", reply.code == pb.OK)
        event, body = c.event("delivery")
        check("delivery carries the exact signed bytes", body == raw)
        sm = pb.SignedMessage()
        sm.ParseFromString(body)
        nacl.signing.VerifyKey(bytes.fromhex(identity["public_key"])).verify(
            b"spbe.v1.message\0" + sm.message, sm.signature)
        check("delivery verifies end to end", event.delivery.sequence == 1)

        bad = bytearray(c.signed_message("ikn.formasi.dibuka", b"tampered"))
        bad[-1] ^= 1
        reply = c.publish(bytes(bad))
        check("flipped byte gets BAD_SIGNATURE", reply.code == pb.BAD_SIGNATURE)
        reply = c.publish(c.signed_message("ikn.lain", b"x"))
        check("forbidden topic gets FORBIDDEN", reply.code == pb.FORBIDDEN)
        dup_id = os.urandom(16)
        first = c.publish(c.signed_message("ikn.formasi.dibuka", b"a", dup_id))
        again = c.publish(c.signed_message("ikn.formasi.dibuka", b"a", dup_id))
        r1, r2 = pb.Receipt(), pb.Receipt()
        r1.ParseFromString(first.receipt.receipt)
        r2.ParseFromString(again.receipt.receipt)
        check("same id again gets DUPLICATE with the original sequence",
              again.code == pb.DUPLICATE and r2.sequence == r1.sequence)
        c.sock.send_multipart([b"\x01\x02", b"", b"", b""])
        frame, _ = c.recv()
        check("wrong frame count gets BAD_REQUEST", frame.reply.code == pb.BAD_REQUEST)

        rid = c.send("ping", pb.Ping())
        reply, _ = c.reply(rid)
        check("the session still serves", reply.code == pb.OK)
        c.close()

        # a client that asks for batches gets its receipts and deliveries gathered
        c = Client(endpoint, identity, broker_key)
        reply, _ = c.reply(c.send("hello", pb.Hello(protocol_version=1, member=identity["member"],
                                                    client="python-test", batch=100)))
        check("hello with batch is welcomed", reply.code == pb.OK)

        def next_batch():
            while True:
                frame, body = c.recv()
                if frame.WhichOneof("body") == "batch":
                    return frame.batch, body

        reply, _ = c.reply(c.send("subscribe", pb.Subscribe(pattern="ikn.formasi.>",
                                                            start=pb.START_FIRST)))
        batch, body = next_batch()
        check("a FrameBatch has no body frame and a message per delivery",
              body is None and len(batch.deliveries) == len(batch.messages) == 2)
        check("the batch holds the stored messages in order, the exact bytes",
              [d.sequence for d in batch.deliveries] == [1, 2] and batch.messages[0] == raw)
        verified = 0
        for m in batch.messages:
            sm = pb.SignedMessage()
            sm.ParseFromString(m)
            try:
                nacl.signing.VerifyKey(bytes.fromhex(identity["public_key"])).verify(
                    b"spbe.v1.message\0" + sm.message, sm.signature)
                verified += 1
            except nacl.exceptions.BadSignatureError:
                pass
        check("each message of a batch verifies on its own", verified == 2)
        raw3 = c.signed_message("ikn.formasi.dibuka", b"third")
        rid = c.send("publish", pb.Publish(), raw3)
        batch, _ = next_batch()
        receipts = [r for r in batch.replies if r.request_id == rid]
        check("the receipt of a publish comes in a batch",
              len(receipts) == 1 and receipts[0].code == pb.OK)
        r = receipts[0].receipt if receipts else pb.SignedReceipt()
        receipt = pb.Receipt()
        receipt.ParseFromString(r.receipt)
        try:
            nacl.signing.VerifyKey(broker_key).verify(b"spbe.v1.receipt\0" + r.receipt,
                                                      r.signature)
            signed = True
        except nacl.exceptions.BadSignatureError:
            signed = False
        check("a batched receipt is signed by the broker for the bytes sent",
              signed and receipt.message_hash == hashlib.sha256(raw3).digest())
        check("the subscriber gets the new message in a batch too",
              [d.sequence for d in batch.deliveries] == [3]
              or [d.sequence for d in next_batch()[0].deliveries] == [3])
        c.close()

        c = Client(endpoint, identity, broker_key)
        c.hello()
        # several publishes in one frame: each answered on its own, at request id + i
        entries = [c.signed_message("ikn.formasi.kuota", b"satu"), b"\x0a\x03abc",
                   c.signed_message("ikn.lain", b"x"), c.signed_message("ikn.formasi.kuota", b"dua")]
        rid = c.send("publish_batch", pb.PublishBatch(messages=entries))
        c.next_id += len(entries) - 1  # the batch took as many request ids as messages
        got = {}  # refusals come at once, the others after their commit: any order
        while len(got) < len(entries):
            frame, _ = c.recv()
            if frame.WhichOneof("body") == "reply":
                got[frame.reply.request_id] = frame.reply
        check("a publish batch's replies carry its request ids",
              sorted(got) == [rid + i for i in range(len(entries))])
        replies = [got.get(rid + i, pb.Reply()) for i in range(len(entries))]
        check("a publish batch gets a reply per message, in order",
              [r.code for r in replies] == [pb.OK, pb.BAD_REQUEST, pb.FORBIDDEN, pb.OK])
        sequences, signed = [], 0
        for r in (replies[0], replies[3]):
            sr = r.receipt
            signed += spbeclient.verify_signed(b"spbe.v1.receipt", sr.receipt, sr.signature,
                                               sr.batch if sr.HasField("batch") else None,
                                               broker_key)
            rc = pb.Receipt()
            rc.ParseFromString(sr.receipt)
            sequences.append(rc.sequence)
        check("a batch's messages are stored in order with signed receipts",
              sequences == [1, 2] and signed == 2)
        reply = c.call("publish_batch", pb.PublishBatch())
        check("an empty publish batch gets BAD_REQUEST", reply.code == pb.BAD_REQUEST)
        reply = c.call("publish_batch", pb.PublishBatch(messages=[b"x"] * 257))
        check("a publish batch over the limit gets BAD_REQUEST, with the limit",
              reply.code == pb.BAD_REQUEST and "1 to 256" in reply.error)
        reply = c.call("publish_batch", pb.PublishBatch(messages=[entries[0]]), b"body")
        check("a publish batch with a body frame gets BAD_REQUEST", reply.code == pb.BAD_REQUEST)
        c.close()
    finally:
        broker.terminate()
        code = broker.wait(10)
        check("broker stops cleanly on SIGTERM", code == 0)
        shutil.rmtree(work, ignore_errors=True)
    return results.summary()


if __name__ == "__main__":
    sys.exit(main())
