-- One worker round: claim up to :batch (100 in run.sh) ready invocations (SKIP LOCKED, their
-- rows read back, each leased and Running, two events each), then complete them in a second
-- transaction (Succeeded, one event each), carrying the claimed keys between the two as sai
-- does.
BEGIN;
WITH taken AS (
    SELECT record_no, id, started_ms, record FROM sai_invocation
    WHERE account = 'default' AND service = 'bench' AND function = 'floor'
      AND ready_ms IS NOT NULL
    ORDER BY ready_ms, record_no LIMIT :batch FOR UPDATE SKIP LOCKED),
now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms),
started AS (
    UPDATE sai_invocation i SET status = 'Running', attempts = 1, ready_ms = NULL,
        due_ms = now.ms + 30000, lease_attempt = 1, lease_started_ms = now.ms,
        lease_deadline_ms = now.ms + 30000, record = taken.record
    FROM taken, now WHERE i.record_no = taken.record_no
    RETURNING i.record_no, i.id, length(i.record) AS bytes)
SELECT coalesce(array_agg(record_no), '{}') AS nos, coalesce(array_agg(id), '{}') AS ids,
       count(*) AS n, coalesce(sum(bytes), 0) AS bytes
FROM started \gset
\if :n > 0
SELECT pg_notify('sai_floor', 'f');
WITH head AS (
    INSERT INTO sai_feed_head (account, seq) VALUES ('default', 2 * :n)
    ON CONFLICT (account) DO UPDATE SET seq = sai_feed_head.seq + EXCLUDED.seq
    RETURNING seq - 2 * :n AS base)
INSERT INTO sai_change (account, seq, service, function, id, started_ms, event_id, record)
  SELECT 'default', head.base + 2 * (c.ord - 1) + e, 'bench', 'floor', c.id, 0, 1 + e,
         decode(repeat('5a', 105), 'hex')
  FROM head, unnest(':ids'::text[]) WITH ORDINALITY AS c(id, ord), generate_series(1, 2) e;
\endif
COMMIT;
\if :n > 0
BEGIN;
UPDATE sai_invocation SET status = 'Succeeded',
    end_ms = (extract(epoch FROM clock_timestamp()) * 1000)::bigint, due_ms = NULL,
    lease_attempt = NULL, lease_started_ms = NULL, lease_deadline_ms = NULL, record = record
  WHERE record_no = ANY(':nos'::bigint[]);
SELECT pg_notify('sai_floor', 'f');
WITH head AS (
    INSERT INTO sai_feed_head (account, seq) VALUES ('default', :n)
    ON CONFLICT (account) DO UPDATE SET seq = sai_feed_head.seq + EXCLUDED.seq
    RETURNING seq - :n AS base)
INSERT INTO sai_change (account, seq, service, function, id, started_ms, event_id, record)
  SELECT 'default', head.base + c.ord, 'bench', 'floor', c.id, 0, 4,
         decode(repeat('5a', 105), 'hex')
  FROM head, unnest(':ids'::text[]) WITH ORDINALITY AS c(id, ord);
COMMIT;
\endif
