"""producer.py - publish sluice jobs from Python with confluent-kafka.

    python3 producer.py --bootstrap HOST:PORT [--topic sluice.jobs]
                        [--jobs N] [--prefix ID] [--campaign C]
                        [--domains example.com,Bücher.example,...]

Publishes N jobs, one recipient each (u<i>@<domain>, the domains taken in
turn), as sluice.v1.Job records keyed by the recipient domain in
lower-case A-label form, with the partitioner libsluice uses (murmur2, as
Java's default), so that every domain lands on the partition libsluice
would choose. A job counts as accepted only when its delivery report says
so. Prints one line per accepted job ("JOB_ID PARTITION DOMAIN") and exits
0 only if every job was accepted.

The sluice.v1 Python classes are generated from proto/ (see
docs/producing.md): protoc -I proto --python_out=GEN ...; put GEN on
PYTHONPATH.
"""

import argparse
import sys
import time

import idna
from confluent_kafka import Producer

from sluice.v1 import common_pb2, job_pb2

RAW = ("From: Shop <orders@example.net>\r\n"
       "To: {to}\r\n"
       "Subject: Your order {job_id}\r\n"
       "\r\n"
       "Thank you for your order.\r\n")


def domain_of(address):
    """The recipient domain as sluice keys it: lower-case A-label
    (IDNA 2008 with UTS #46 mapping: Bücher.Example -> xn--bcher-kva.example)."""
    return idna.encode(address.rsplit("@", 1)[1], uts46=True).decode("ascii").lower()


def make_job(job_id, recipient, campaign):
    domain = domain_of(recipient)
    rcpt = recipient.rsplit("@", 1)[0] + "@" + domain
    return job_pb2.Job(
        version=1,
        job_id=job_id,
        tenant="shop",
        campaign=campaign,
        priority=common_pb2.PRIORITY_BULK,
        mail_from="bounces@example.net",
        recipients=[rcpt],
        domain=domain,
        raw=RAW.format(to=rcpt, job_id=job_id).encode(),
        created_at_ms=int(time.time() * 1000),
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", default="sluice.jobs")
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--prefix", default="py")
    ap.add_argument("--campaign", default="python-example")
    ap.add_argument("--domains", default="example.com")
    a = ap.parse_args()

    producer = Producer({
        "bootstrap.servers": a.bootstrap,
        "enable.idempotence": True,       # retries never duplicate or reorder
        "acks": "all",                    # implied by idempotence; stated anyway
        "partitioner": "murmur2_random",  # Java's partitioner, as libsluice uses
        "message.max.bytes": 1130496,     # sluice's size budget (1 MiB jobs)
    })
    accepted, failed = [], []

    def on_delivery(err, msg):
        # The only place a job may be called accepted.
        if err:
            failed.append((msg.key().decode(), err))
        else:
            accepted.append(msg)

    domains = a.domains.split(",")
    for i in range(a.jobs):
        job = make_job("%s-%06d" % (a.prefix, i), "u%d@%s" % (i, domains[i % len(domains)]),
                       a.campaign)
        while True:
            try:
                producer.produce(a.topic, key=job.domain.encode(),
                                 value=job.SerializeToString(), on_delivery=on_delivery)
                break
            except BufferError:           # the local queue is full: serve reports
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(60)
    for msg in accepted:
        job = job_pb2.Job.FromString(msg.value())
        print(job.job_id, msg.partition(), job.domain)
    if failed or remaining or len(accepted) != a.jobs:
        sys.exit("producer.py: %d of %d jobs not accepted: %r"
                 % (a.jobs - len(accepted), a.jobs, failed[:5] or "timed out"))


if __name__ == "__main__":
    main()
