-- One producer transaction: :batch invocations (100 in run.sh) accepted, as sai's group
-- commit writes them (the function's catalog row, the rows, then their Enqueued events in the
-- account's feed, the head row taken last).
\set r random(1, 1000000000000)
BEGIN;
INSERT INTO sai_function (account, service, function, qualifier)
  VALUES ('default', 'bench', 'floor', 'LATEST') ON CONFLICT DO NOTHING;
INSERT INTO sai_invocation (account, service, function, id, qualifier, status, started_ms,
    attempts, ready_ms, due_ms, record)
  SELECT 'default', 'bench', 'floor', 'p' || :r || '-' || g, 'LATEST', 'Enqueued', t.ms, 0,
         t.ms, t.ms + 86400000, decode(repeat('5a', 320), 'hex')
  FROM generate_series(1, :batch) g,
       (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) t
  ON CONFLICT (account, service, function, id) DO NOTHING;
SELECT pg_notify('sai_floor', 'r');
WITH head AS (
    INSERT INTO sai_feed_head (account, seq) VALUES ('default', :batch)
    ON CONFLICT (account) DO UPDATE SET seq = sai_feed_head.seq + EXCLUDED.seq
    RETURNING seq - :batch AS base)
INSERT INTO sai_change (account, seq, service, function, id, started_ms, event_id, record)
  SELECT 'default', head.base + g, 'bench', 'floor', 'p' || :r || '-' || g, 0, 1,
         decode(repeat('5a', 105), 'hex')
  FROM head, generate_series(1, :batch) g;
COMMIT;
