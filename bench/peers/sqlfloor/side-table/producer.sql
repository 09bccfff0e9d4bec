-- ../producer.sql on the side-table schema: each new row also gets its sai_open row.
\set r random(1, 1000000000000)
BEGIN;
INSERT INTO sai_function (account, service, function, qualifier)
  VALUES ('default', 'bench', 'floor', 'LATEST') ON CONFLICT DO NOTHING;
WITH ins AS (
INSERT INTO sai_invocation (account, service, function, id, qualifier, status, started_ms,
    attempts, record)
  SELECT 'default', 'bench', 'floor', 'p' || :r || '-' || g, 'LATEST', 'Enqueued', t.ms, 0,
         decode(repeat('5a', 320), 'hex')
  FROM generate_series(1, :batch) g,
       (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms) t
  ON CONFLICT (account, service, function, id) DO NOTHING
  RETURNING record_no, account, service, function, qualifier, started_ms)
INSERT INTO sai_open SELECT record_no, account, service, function, qualifier, started_ms, started_ms + 86400000 FROM ins;
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
