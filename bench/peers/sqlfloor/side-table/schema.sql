-- sai's PostgreSQL schema with the queue and deadline columns (ready_ms, due_ms) moved out of
-- sai_invocation into a narrow sai_open table (one row per open invocation), and end_ms no
-- longer indexed there but listed in sai_ended for retention. No indexed column of the wide
-- row changes after its insert, so its two updates can be HOT (heap-only: no new index
-- entries) when its page has room, which the fill factor leaves.
CREATE TABLE sai_function (
    account   text COLLATE "C" NOT NULL,
    service   text COLLATE "C" NOT NULL,
    function  text COLLATE "C" NOT NULL,
    qualifier text COLLATE "C" NOT NULL,
    config    text,
    PRIMARY KEY (account, service, function, qualifier)
);

CREATE TABLE sai_invocation (
    record_no  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account    text COLLATE "C" NOT NULL,
    service    text COLLATE "C" NOT NULL,
    function   text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    qualifier  text COLLATE "C" NOT NULL,
    status     text NOT NULL,
    started_ms bigint NOT NULL,
    end_ms     bigint NOT NULL DEFAULT 0,
    attempts   integer NOT NULL,
    lease_attempt     integer,
    lease_started_ms  bigint,
    lease_deadline_ms bigint,
    record     bytea NOT NULL,
    payload    text,
    UNIQUE (account, service, function, id)
) WITH (fillfactor = 50);
CREATE INDEX sai_invocation_list ON sai_invocation (account, service, function, started_ms, id);

CREATE TABLE sai_open (
    record_no bigint PRIMARY KEY,
    account   text COLLATE "C" NOT NULL,
    service   text COLLATE "C" NOT NULL,
    function  text COLLATE "C" NOT NULL,
    qualifier text COLLATE "C" NOT NULL,
    ready_ms  bigint,
    due_ms    bigint NOT NULL
);
CREATE INDEX sai_open_ready ON sai_open (account, service, function, ready_ms, record_no)
    WHERE ready_ms IS NOT NULL;
CREATE INDEX sai_open_due ON sai_open (due_ms);

CREATE TABLE sai_ended (
    end_ms    bigint NOT NULL,
    record_no bigint NOT NULL,
    PRIMARY KEY (end_ms, record_no)
);

CREATE TABLE sai_change (
    account    text COLLATE "C" NOT NULL,
    seq        bigint NOT NULL,
    service    text COLLATE "C" NOT NULL,
    function   text COLLATE "C" NOT NULL,
    id         text COLLATE "C" NOT NULL,
    started_ms bigint NOT NULL,
    event_id   integer NOT NULL,
    record     bytea NOT NULL,
    PRIMARY KEY (account, seq)
);

CREATE TABLE sai_feed_head (
    account    text COLLATE "C" PRIMARY KEY,
    seq        bigint NOT NULL,
    trimmed_to bigint NOT NULL DEFAULT 0
);
