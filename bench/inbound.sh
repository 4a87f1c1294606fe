#!/usr/bin/env bash
# Bounce intake: sluice-inbound against Postfix's smtpd, both accepting the
# same DSN (a Postfix-shaped multipart/report, 1.3 KB, to a VERP return
# path with a valid token) from the null sender over 16 sessions in the
# same run, driven by the same client (bench/submit_load.py --message).
# sluice-inbound parses each with GMime, opens the token, classifies the
# diagnostic and answers 250 once the dev broker acknowledged the BOUNCED
# event; Postfix only queues the message (its smtp transport is deferred,
# so that deliveries do not compete for the CPU): what an MX in front of
# a bounce processor would do before any of the work.
# Run as root from the project root after building:
#   bash bench/inbound.sh [N] [BIN_DIR]      (defaults: 10000, build/bin)
# ROUNDS=R alternates R runs of each server (default 3).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
BIN=${2:-build/bin}
SESSIONS=16
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d /tmp/sluice-bench-inbound.XXXXXX)
chmod 755 "$WORK"
. bench/lib.sh
trap bench_cleanup EXIT

bench_devbroker
KEY=bench-inbound-key-0123456789abcdef
printf '%s\n' "$KEY" > "$WORK/token.key"
IP=$(bench_free_port)
MP=$(bench_free_port)
cat > "$WORK/sluice.yaml" <<EOC
kafka:
  bootstrap: $(head -1 "$WORK/port")
metrics: { listen: 127.0.0.1:$MP }
tokens:
  secret_file: $WORK/token.key
verp:
  domain: bounce.bench.example
inbound:
  listen: ["127.0.0.1:$IP"]
EOC
bench_daemon sluice-inbound "$IP" -c "$WORK/sluice.yaml" --hostname mx.bench.example

# The return path the sender would have written (common/token.c's format:
# base32 of tenant, job id and recipient, and the first 10 bytes of their
# HMAC-SHA256), and a DSN for it shaped like Postfix's.
RCPT=reader@example.com
RP=$(python3 - "$KEY" "$RCPT" <<'PY'
import base64, hashlib, hmac, sys
key, rcpt = sys.argv[1].encode(), sys.argv[2]
payload = "\x1f".join(["default", "bench-job-0", rcpt]).encode()
tag = hmac.new(key, b"verp\0" + payload, hashlib.sha256).digest()[:10]
print("bounce+%s@bounce.bench.example" % base64.b32encode(payload + tag).decode().lower().rstrip("="))
PY
)
sed -e "s|@RP@|$RP|g" -e "s|@RCPT@|$RCPT|g" > "$WORK/dsn.eml" <<'EOM'
Return-Path: <>
From: MAILER-DAEMON@mx.receiver.example (Mail Delivery System)
To: @RP@
Subject: Undelivered Mail Returned to Sender
Date: Sat, 05 Dec 2026 12:00:00 +0000
Message-ID: <20261205120000.ABC123@mx.receiver.example>
Auto-Submitted: auto-replied
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B0"

This is a MIME-encapsulated message.

--B0
Content-Description: Notification
Content-Type: text/plain; charset=us-ascii

This is the mail system at host mx.receiver.example.

I'm sorry to have to inform you that your message could not
be delivered to one or more recipients.

<@RCPT@>: host mail.example.com[192.0.2.25] said: 550 5.1.1 <@RCPT@>:
    Recipient address rejected: User unknown in virtual mailbox table

--B0
Content-Description: Delivery report
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.receiver.example
Arrival-Date: Sat, 05 Dec 2026 11:59:58 +0000

Final-Recipient: rfc822; @RCPT@
Original-Recipient: rfc822;@RCPT@
Action: failed
Status: 5.1.1
Remote-MTA: dns; mail.example.com
Diagnostic-Code: smtp; 550 5.1.1 <@RCPT@>: Recipient address rejected: User
    unknown in virtual mailbox table

--B0
Content-Description: Undelivered Message Headers
Content-Type: text/rfc822-headers

Return-Path: <@RP@>
From: News <news@sender.example>
To: <@RCPT@>
Subject: This week's news
Message-ID: <bench-job-0@sender.example>

--B0--
EOM

bench_postfix_accepting

bounced() { # BOUNCED events sluice-inbound has published, from its metrics
  curl -s "http://127.0.0.1:$MP/metrics" |
    awk '/^sluice_inbound_events_total\{.*type="BOUNCED"/ { n += $NF } END { print n + 0 }'
}

echo "messages            $N DSNs of $(wc -c < "$WORK/dsn.eml") bytes, $SESSIONS sessions, $ROUNDS rounds"
for r in $(seq "$ROUNDS"); do
  b0=$(bounced)
  python3 bench/submit_load.py --port "$IP" -n "$N" -s "$SESSIONS" --message "$WORK/dsn.eml" \
    --from "" --to "$RP" > "$WORK/sluice.$r.json"
  echo "$(( $(bounced) - b0 ))" > "$WORK/bounced.$r"
  python3 bench/submit_load.py --port "$PF" -n "$N" -s "$SESSIONS" --message "$WORK/dsn.eml" \
    --from "" --to "$RP" > "$WORK/postfix.$r.json"
done

for r in $(seq "$ROUNDS"); do
  [ "$(cat "$WORK/bounced.$r")" = "$N" ] \
    || { echo "round $r: $(cat "$WORK/bounced.$r") BOUNCED events for $N DSNs" >&2; exit 1; }
done
echo "every round: $N DSNs, $N BOUNCED events"
python3 bench/rounds.py "$N" "$ROUNDS" "$WORK" sluice sluice-inbound postfix "postfix smtpd"
