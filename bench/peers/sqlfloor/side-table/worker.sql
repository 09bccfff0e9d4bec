-- ../worker.sql on the side-table schema: the claim takes sai_open rows (and locks their
-- invocation rows), clears ready_ms and sets the lease deadline there; the completion deletes
-- the sai_open row and lists the end in sai_ended.
BEGIN;
WITH taken AS (
    SELECT o.record_no, i.id, i.started_ms, i.record FROM sai_open o JOIN sai_invocation i USING (record_no)
    WHERE o.account = 'default' AND o.service = 'bench' AND o.function = 'floor'
      AND o.ready_ms IS NOT NULL
    ORDER BY o.ready_ms, o.record_no LIMIT :batch FOR UPDATE OF o, i SKIP LOCKED),
now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms),
opened AS (UPDATE sai_open o SET ready_ms = NULL, due_ms = now.ms + 30000 FROM taken, now WHERE o.record_no = taken.record_no),
started AS (
    UPDATE sai_invocation i SET status = 'Running', attempts = 1,
        lease_attempt = 1, lease_started_ms = now.ms,
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
WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms),
gone AS (DELETE FROM sai_open WHERE record_no = ANY(':nos'::bigint[])),
ended AS (INSERT INTO sai_ended SELECT now.ms, n FROM now, unnest(':nos'::bigint[]) n)
UPDATE sai_invocation SET status = 'Succeeded',
    end_ms = now.ms,
    lease_attempt = NULL, lease_started_ms = NULL, lease_deadline_ms = NULL, record = record
  FROM now WHERE record_no = ANY(':nos'::bigint[]);
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
