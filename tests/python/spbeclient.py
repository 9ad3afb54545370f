"""A small independent client of protocol 1, written from docs/protocol.md, shared by the
Python tests: pyzmq (CurveZMQ), PyNaCl (Ed25519) and classes generated from
proto/spbe/v1/spbe.proto (the directory given to load_proto)."""
import hashlib
import os
import struct
import socket
import subprocess
import sys
import time

import nacl.bindings as nb
import nacl.exceptions
import nacl.signing
import zmq

pb = None


def load_proto(gen_dir):
    global pb
    sys.path.insert(0, gen_dir)
    from spbe.v1 import spbe_pb2
    pb = spbe_pb2
    return pb


class Results:
    def __init__(self):
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, detail=""):
        if cond:
            self.passed += 1
        else:
            self.failed += 1
        print(("ok     " if cond else "FAILED ") + name + ("" if cond or not detail else
                                                          "  (" + str(detail) + ")"), flush=True)
        return cond

    def summary(self):
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 1 if self.failed else 0


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


def new_identity(member):
    """An identity as the keygen writes it: secret_key is seed and public key."""
    seed = os.urandom(32)
    public = nacl.signing.SigningKey(seed).verify_key.encode()
    return {"member": member, "public_key": public.hex(), "secret_key": (seed + public).hex()}


def sign(context, data, signing_key):
    return signing_key.sign(context + b"\0" + data).signature


def mth(leaves):
    """RFC 9162 Merkle tree hash of leaf byte strings."""
    if len(leaves) == 1:
        return hashlib.sha256(b"\0" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\1" + mth(leaves[:k]) + mth(leaves[k:])).digest()


def audit_path(m, leaves):
    """RFC 9162 PATH(m, D[n])."""
    if len(leaves) == 1:
        return []
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    if m < k:
        return audit_path(m, leaves[:k]) + [mth(leaves[k:])]
    return audit_path(m - k, leaves[k:]) + [mth(leaves[:k])]


def sign_batch(context, blobs, signing_key):
    """Batch signature (docs/protocol.md): one signature over the root of
    context || 0x00 || blob leaves; returns (signature, [BatchProof])."""
    leaves = [context + b"\0" + b for b in blobs]
    root = mth(leaves)
    signature = sign(b"spbe.v1.batch", struct.pack(">Q", len(leaves)) + root, signing_key)
    proofs = [pb.BatchProof(index=i, size=len(leaves), path=audit_path(i, leaves))
              for i in range(len(leaves))]
    return signature, proofs


def root_from_path(index, size, leaf_hash, path):
    """RFC 9162 2.1.3.2: the root an inclusion path leads to from a leaf hash (None if
    the path does not fit the tree size)."""
    fn, sn, r = index, size - 1, leaf_hash
    for p in path:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            r = hashlib.sha256(b"\1" + p + r).digest()
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = hashlib.sha256(b"\1" + r + p).digest()
        fn >>= 1
        sn >>= 1
    return r if sn == 0 else None


def verify_signed(context, blob, signature, batch, public_key):
    """True when blob is signed under context by public_key: on its own, or (batch set)
    through its proof to a batch root the signature covers (docs/protocol.md)."""
    try:
        if batch is None or batch.size == 0:
            nacl.signing.VerifyKey(public_key).verify(context + b"\0" + blob, signature)
            return True
        leaf = hashlib.sha256(b"\0" + context + b"\0" + blob).digest()
        root = root_from_path(batch.index, batch.size, leaf, list(batch.path))
        if root is None:
            return False
        nacl.signing.VerifyKey(public_key).verify(
            b"spbe.v1.batch\0" + struct.pack(">Q", batch.size) + root, signature)
        return True
    except nacl.exceptions.BadSignatureError:
        return False


def start_broker(broker_bin, work, extra=()):
    """Starts a broker on a free loopback port; returns (process, endpoint, data dir, log path)."""
    data = os.path.join(work, "data")
    endpoint = "tcp://127.0.0.1:%d" % free_port()
    log_path = os.path.join(work, "broker.log")
    log = open(log_path, "w")
    proc = subprocess.Popen([broker_bin, "--data", data, "--listen", endpoint] + list(extra),
                            stderr=log)
    for _ in range(500):
        text = open(log_path).read()
        if "event=started" in text or '"event":"started"' in text:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.02)
    return proc, endpoint, data, log_path


class Client:
    def __init__(self, endpoint, identity, broker_key):
        self.identity = identity
        self.member = identity["member"]
        seed = bytes.fromhex(identity["secret_key"])[:32]
        self.key = nacl.signing.SigningKey(seed)
        self.public_key = bytes.fromhex(identity["public_key"])
        self.broker_key = broker_key
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.curve_serverkey = nb.crypto_sign_ed25519_pk_to_curve25519(broker_key)
        self.sock.curve_publickey = nb.crypto_sign_ed25519_pk_to_curve25519(self.public_key)
        self.sock.curve_secretkey = nb.crypto_sign_ed25519_sk_to_curve25519(
            bytes.fromhex(identity["secret_key"]))
        self.sock.rcvtimeo = 5000
        self.sock.linger = 0
        self.sock.connect(endpoint)
        self.next_id = 0
        self.events = []

    def close(self):
        self.sock.close()
        self.ctx.term()

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
        """The reply to request_id; events that come first are kept for event()."""
        while True:
            frame, body = self.recv()
            if frame.WhichOneof("body") == "reply" and frame.reply.request_id == request_id:
                return frame.reply, body
            if frame.WhichOneof("body") == "event":
                self.events.append((frame.event, body))

    def call(self, field, message, body=None):
        reply, _ = self.reply(self.send(field, message, body))
        return reply

    def event(self, kind=None):
        """The next event (of the kind: delivery, goodbye, request), pings skipped."""
        while True:
            while self.events:
                ev, body = self.events.pop(0)
                if ev.WhichOneof("body") != "ping" and (kind is None or
                                                         ev.WhichOneof("body") == kind):
                    return ev, body
            frame, body = self.recv()
            if frame.WhichOneof("body") == "event":
                self.events.append((frame.event, body))

    def hello(self):
        return self.call("hello", pb.Hello(protocol_version=1, member=self.member,
                                           client="python-test"))

    def signed_message(self, topic, payload, msg_id=None, sender=None, correlation_id=None,
                       batch=None, key=None):
        m = pb.Message(id=msg_id or os.urandom(16), topic=topic, sender=sender or self.member,
                       created_ns=time.time_ns(), payload=payload)
        if correlation_id is not None:
            m.correlation_id = correlation_id
        mb = m.SerializeToString()
        sm = pb.SignedMessage(message=mb, signature=sign(b"spbe.v1.message", mb,
                                                         key or self.key))
        if batch is not None:
            sm.batch.CopyFrom(batch)
        return sm.SerializeToString()

    def signed_batch(self, topic, payloads):
        """Messages signed as one batch, each with its proof."""
        blobs = [pb.Message(id=os.urandom(16), topic=topic, sender=self.member,
                            created_ns=time.time_ns(), payload=p).SerializeToString()
                 for p in payloads]
        signature, proofs = sign_batch(b"spbe.v1.message", blobs, self.key)
        return [pb.SignedMessage(message=b, signature=signature, batch=proof).SerializeToString()
                for b, proof in zip(blobs, proofs)]

    def publish(self, raw):
        return self.call("publish", pb.Publish(), raw)
