#!/usr/bin/python3
"""An independent client, written from docs/protocol.md in another language.

It speaks protocol 1 to a real spbe-broker with pyzmq (CurveZMQ), PyNaCl (Ed25519) and
Python protobuf classes generated from proto/spbe/v1/spbe.proto: handshake, signed
publish, the broker's signed receipt, subscribe with replay, end-to-end verification of
the delivered bytes, and refusals. Usage: test_protocol.py BROKER_BIN CLI_BIN GEN_DIR
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, sys.argv[3])
import nacl.bindings as nb  # noqa: E402
import nacl.signing  # noqa: E402
import zmq  # noqa: E402
from spbe.v1 import spbe_pb2 as pb  # noqa: E402

BROKER, CLI = sys.argv[1], sys.argv[2]
results = {"passed": 0, "failed": 0}


def check(name, cond):
    results["passed" if cond else "failed"] += 1
    print(("ok     " if cond else "FAILED ") + name, flush=True)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def read_identity(path):
    fields = {}
    for line in open(path):
        line = line.strip()
        if line and not line.startswith("#"):
            k, v = line.split("=", 1)
            fields[k.strip()] = v.strip()
    return fields


def sign(context, data, signing_key):
    return signing_key.sign(context + b"\0" + data).signature


class Client:
    def __init__(self, endpoint, identity, broker_key):
        self.identity = identity
        seed = bytes.fromhex(identity["secret_key"])[:32]
        self.key = nacl.signing.SigningKey(seed)
        self.broker_key = broker_key
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        ed_public = bytes.fromhex(identity["public_key"])
        self.sock.curve_serverkey = nb.crypto_sign_ed25519_pk_to_curve25519(broker_key)
        self.sock.curve_publickey = nb.crypto_sign_ed25519_pk_to_curve25519(ed_public)
        self.sock.curve_secretkey = nb.crypto_sign_ed25519_sk_to_curve25519(
            bytes.fromhex(identity["secret_key"]))
        self.sock.rcvtimeo = 5000
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.next_id = 0

    def send(self, field, message, body=None):
        self.next_id += 1
        cmd = pb.Command(request_id=self.next_id)
        getattr(cmd, field).CopyFrom(message)
        frames = [cmd.SerializeToString()] + ([body] if body is not None else [])
        self.sock.send_multipart(frames)
        return self.next_id

    def recv(self):
        frames = self.sock.recv_multipart()
        frame = pb.BrokerFrame()
        frame.ParseFromString(frames[0])
        return frame, (frames[1] if len(frames) > 1 else None)

    def reply(self, request_id):
        while True:
            frame, body = self.recv()
            if frame.WhichOneof("body") == "reply" and frame.reply.request_id == request_id:
                return frame.reply, body

    def signed_message(self, topic, payload, msg_id=None):
        m = pb.Message(id=msg_id or os.urandom(16), topic=topic, sender=self.identity["member"],
                       created_ns=time.time_ns(), payload=payload)
        mb = m.SerializeToString()
        sm = pb.SignedMessage(message=mb, signature=sign(b"spbe.v1.message", mb, self.key))
        return sm.SerializeToString()

    def publish(self, raw):
        rid = self.send("publish", pb.Publish(), raw)
        reply, _ = self.reply(rid)
        return reply


def main():
    work = tempfile.mkdtemp(prefix="spbe-py-")
    data = os.path.join(work, "data")
    endpoint = "tcp://127.0.0.1:%d" % free_port()
    log = open(os.path.join(work, "broker.log"), "w")
    broker = subprocess.Popen([BROKER, "--data", data, "--listen", endpoint], stderr=log)
    try:
        for _ in range(500):
            if "event=started" in open(os.path.join(work, "broker.log")).read():
                break
            time.sleep(0.02)
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

        raw = c.signed_message("ikn.formasi.dibuka", b'{"formasi":250000}')
        reply = c.publish(raw)
        check("publish gets OK", reply.code == pb.OK)
        r = reply.receipt
        nacl.signing.VerifyKey(broker_key).verify(b"spbe.v1.receipt\0" + r.receipt, r.signature)
        receipt = pb.Receipt()
        receipt.ParseFromString(r.receipt)
        check("receipt is signed by the broker and names sequence 1",
              receipt.sequence == 1 and receipt.topic == "ikn.formasi.dibuka")
        import hashlib
        check("receipt hash is SHA-256 of the bytes sent",
              receipt.message_hash == hashlib.sha256(raw).digest())

        rid = c.send("subscribe", pb.Subscribe(pattern="ikn.formasi.>",
                                               start=pb.START_FIRST))
        reply, _ = c.reply(rid)
        check("subscribe from first", reply.code == pb.OK)
        frame, body = c.recv()
        while frame.WhichOneof("body") != "event":
            frame, body = c.recv()
        check("delivery carries the exact signed bytes", body == raw)
        sm = pb.SignedMessage()
        sm.ParseFromString(body)
        nacl.signing.VerifyKey(bytes.fromhex(identity["public_key"])).verify(
            b"spbe.v1.message\0" + sm.message, sm.signature)
        check("delivery verifies end to end", frame.event.delivery.sequence == 1)

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
        c.sock.close()
        c.ctx.term()
    finally:
        broker.terminate()
        code = broker.wait(10)
        check("broker stops cleanly on SIGTERM", code == 0)
        shutil.rmtree(work, ignore_errors=True)
    print("%d passed, %d failed" % (results["passed"], results["failed"]))
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
