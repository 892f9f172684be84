-- tendril platform schema, version 1: the tables a deployment touches.
-- Applied by `tendril worker --database-url ...` (and `tendril finalize`) at start,
-- inside one transaction, under an advisory lock, recorded in tendril_migrations.

CREATE TABLE vines (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    vineyard_id     uuid NOT NULL,
    name            text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'DRAFT'
                    CHECK (status IN ('DRAFT', 'QUEUED', 'PLANNING', 'PLANNED', 'PROVISIONING',
                                      'ACTIVE', 'FAILED', 'DESTROYING', 'DESTROYED')),
    error_message   text,
    config          jsonb NOT NULL DEFAULT '{}'::jsonb,
    last_deploy_job_id uuid,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE workers (
    id              text PRIMARY KEY,
    name            text NOT NULL DEFAULT '',
    status          text NOT NULL DEFAULT 'ONLINE'
                    CHECK (status IN ('ONLINE', 'DRAINING', 'OFFLINE')),
    token_hash      text CHECK (token_hash IS NULL OR token_hash ~ '^[0-9a-f]{64}$'),
    current_job_id  uuid,
    last_heartbeat  timestamptz NOT NULL DEFAULT now(),
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE provision_jobs (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    job_type            text NOT NULL CHECK (job_type IN ('PLAN', 'DEPLOY')),
    status              text NOT NULL DEFAULT 'QUEUED'
                        CHECK (status IN ('QUEUED', 'CLAIMED', 'PROCESSING', 'SUCCESS', 'FAILED', 'CANCELLED')),
    vine_id             uuid NOT NULL REFERENCES vines (id) ON DELETE CASCADE,
    vineyard_id         uuid NOT NULL,
    config_snapshot     jsonb NOT NULL,
    config_hash         text,
    plan_job_id         uuid REFERENCES provision_jobs (id),
    cloud_identity      jsonb NOT NULL DEFAULT '{"provider": "local"}'::jsonb,
    assigned_worker_id  text REFERENCES workers (id) ON DELETE SET NULL,
    worker_id           text REFERENCES workers (id) ON DELETE SET NULL,
    attempts            integer NOT NULL DEFAULT 0,
    error_message       text,
    execution_metadata  jsonb,
    created_at          timestamptz NOT NULL DEFAULT now(),
    claimed_at          timestamptz,
    started_at          timestamptz,
    completed_at        timestamptz,
    last_activity_at    timestamptz,
    finalized_at        timestamptz,
    cancel_requested_at timestamptz,
    CHECK (job_type = 'PLAN' OR plan_job_id IS NOT NULL)
);

-- The queue scan: oldest QUEUED first.
CREATE INDEX provision_jobs_queued ON provision_jobs (created_at, id)
    WHERE status = 'QUEUED' AND assigned_worker_id IS NULL;
CREATE INDEX provision_jobs_queued_assigned ON provision_jobs (assigned_worker_id, created_at, id)
    WHERE status = 'QUEUED' AND assigned_worker_id IS NOT NULL;
-- Defence in depth for the one-active-job-per-vine rule that claim_next_job enforces:
-- two concurrent terraform runs on one vine's state must never happen (the S3 layer of
-- Supabase Storage ignores conditional writes, so terraform's own lock cannot stop them).
CREATE UNIQUE INDEX provision_jobs_one_active_per_vine
    ON provision_jobs (vine_id) WHERE status IN ('CLAIMED', 'PROCESSING');
CREATE INDEX provision_jobs_worker_active
    ON provision_jobs (worker_id) WHERE status IN ('CLAIMED', 'PROCESSING');

CREATE TABLE provision_job_logs (
    id          bigserial PRIMARY KEY,
    job_id      uuid NOT NULL REFERENCES provision_jobs (id) ON DELETE CASCADE,
    stream_type text NOT NULL CHECK (stream_type IN ('STDOUT', 'STDERR', 'SYSTEM')),
    log_chunk   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX provision_job_logs_job ON provision_job_logs (job_id, id);

CREATE TABLE vine_cluster (
    vine_id                 uuid PRIMARY KEY REFERENCES vines (id) ON DELETE CASCADE,
    cluster_name            text,
    cluster_endpoint        text,
    cluster_arn             text,
    argocd_url              text,
    argocd_admin_password   text,
    job_id                  uuid REFERENCES provision_jobs (id) ON DELETE SET NULL,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE vine_databases (
    vine_id                 uuid NOT NULL REFERENCES vines (id) ON DELETE CASCADE,
    name                    text NOT NULL,
    engine                  text,
    writer_endpoint         text,
    reader_endpoint         text,
    credentials_secret_arn  text,
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vine_id, name)
);

CREATE TABLE vine_caches (
    vine_id             uuid NOT NULL REFERENCES vines (id) ON DELETE CASCADE,
    name                text NOT NULL,
    node_type           text,
    primary_endpoint    text,
    reader_endpoint     text,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (vine_id, name)
);

CREATE TABLE vine_repositories (
    vine_id                 uuid PRIMARY KEY REFERENCES vines (id) ON DELETE CASCADE,
    apps_destination_repo   text,
    apps_path               text,
    updated_at              timestamptz NOT NULL DEFAULT now()
);

-- Claims the next job for p_worker in one call, or returns no row.
--
-- * QUEUED jobs only; a job with assigned_worker_id is claimed only by that worker,
--   and a worker takes the jobs assigned to it before unassigned ones.
-- * FOR UPDATE SKIP LOCKED: concurrent workers never wait on, nor take, the same row.
-- * Never a job for a vine that already has a CLAIMED or PROCESSING job. Two workers may
--   look at two different QUEUED jobs of one vine at the same moment; the per-vine
--   transaction-scoped advisory lock serialises them, and the check for an active job
--   runs after the lock is held, in a fresh snapshot (READ COMMITTED), so the second
--   worker sees the first one's claim once it commits, and skips the vine.
CREATE FUNCTION tendril_try_claim(p_job provision_jobs, p_worker text)
RETURNS provision_jobs
LANGUAGE plpgsql AS $$
DECLARE
    claimed provision_jobs;
BEGIN
    IF NOT pg_try_advisory_xact_lock(hashtextextended('tendril.vine:' || p_job.vine_id::text, 0)) THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM provision_jobs a
               WHERE a.vine_id = p_job.vine_id AND a.status IN ('CLAIMED', 'PROCESSING')) THEN
        RETURN NULL;
    END IF;
    UPDATE provision_jobs
       SET status = 'CLAIMED', worker_id = p_worker, claimed_at = now(),
           last_activity_at = now(), attempts = attempts + 1
     WHERE id = p_job.id
    RETURNING * INTO claimed;
    RETURN claimed;
END;
$$;

CREATE FUNCTION claim_next_job(p_worker text)
RETURNS SETOF provision_jobs
LANGUAGE plpgsql AS $$
DECLARE
    candidate provision_jobs;
    claimed provision_jobs;
BEGIN
    -- Jobs assigned to this worker first...
    FOR candidate IN
        SELECT * FROM provision_jobs j
        WHERE j.status = 'QUEUED' AND j.assigned_worker_id = p_worker
        ORDER BY j.created_at, j.id
        LIMIT 32
        FOR UPDATE SKIP LOCKED
    LOOP
        claimed := tendril_try_claim(candidate, p_worker);
        IF claimed.id IS NOT NULL THEN
            RETURN NEXT claimed;
            RETURN;
        END IF;
    END LOOP;
    -- ...then unassigned ones, oldest first (an index scan, not a sort).
    FOR candidate IN
        SELECT * FROM provision_jobs j
        WHERE j.status = 'QUEUED' AND j.assigned_worker_id IS NULL
          AND NOT EXISTS (SELECT 1 FROM provision_jobs a
                          WHERE a.vine_id = j.vine_id AND a.status IN ('CLAIMED', 'PROCESSING'))
        ORDER BY j.created_at, j.id
        LIMIT 32
        FOR UPDATE SKIP LOCKED
    LOOP
        claimed := tendril_try_claim(candidate, p_worker);
        IF claimed.id IS NOT NULL THEN
            RETURN NEXT claimed;
            RETURN;
        END IF;
    END LOOP;
    RETURN;
END;
$$;

-- Asks for a job to be cancelled (what a control plane does). A QUEUED job is CANCELLED at
-- once; a CLAIMED or PROCESSING job keeps its status (so its vine stays locked) until its
-- worker notices cancel_requested_at, stops the run and reports CANCELLED.
CREATE FUNCTION request_job_cancel(p_job uuid, p_reason text DEFAULT 'cancelled by the control plane')
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    s text;
BEGIN
    UPDATE provision_jobs
       SET status = CASE WHEN status = 'QUEUED' THEN 'CANCELLED' ELSE status END,
           completed_at = CASE WHEN status = 'QUEUED' THEN now() ELSE completed_at END,
           error_message = coalesce(error_message, p_reason),
           cancel_requested_at = coalesce(cancel_requested_at, now())
     WHERE id = p_job AND status IN ('QUEUED', 'CLAIMED', 'PROCESSING')
    RETURNING status INTO s;
    RETURN s;
END;
$$;

-- Recovers the jobs of workers that went away. A job CLAIMED or PROCESSING is stale when
-- its worker's last heartbeat is older than p_heartbeat_timeout, or nothing (no log, no
-- status change) happened on it for p_silence. Policy:
--   * CLAIMED (nothing ran yet), or a PLAN (no side effect but its artifact) with
--     attempts < p_max_attempts: back to QUEUED, worker cleared;
--   * a DEPLOY that was PROCESSING (terraform may have half-applied): FAILED, with an
--     error saying so; a person decides whether to re-plan and re-deploy;
--   * anything else that ran out of attempts: FAILED.
-- Workers with a stale heartbeat are marked OFFLINE. Returns what was done per job.
CREATE FUNCTION recover_stale_jobs(
    p_heartbeat_timeout interval DEFAULT interval '60 seconds',
    p_silence interval DEFAULT interval '5 minutes',
    p_max_attempts integer DEFAULT 3)
RETURNS TABLE (job_id uuid, action text)
LANGUAGE plpgsql AS $$
DECLARE
    j provision_jobs;
    why text;
BEGIN
    UPDATE workers SET status = 'OFFLINE'
     WHERE status <> 'OFFLINE' AND last_heartbeat < now() - p_heartbeat_timeout;
    FOR j IN
        SELECT p.* FROM provision_jobs p
        LEFT JOIN workers w ON w.id = p.worker_id
        WHERE p.status IN ('CLAIMED', 'PROCESSING')
          AND (w.id IS NULL
               OR w.last_heartbeat < now() - p_heartbeat_timeout
               OR coalesce(p.last_activity_at, p.claimed_at, p.created_at) < now() - p_silence)
        FOR UPDATE OF p SKIP LOCKED
    LOOP
        why := format('worker %s stopped heartbeating or the job was silent too long', coalesce(j.worker_id, '(gone)'));
        IF j.cancel_requested_at IS NOT NULL THEN
            UPDATE provision_jobs
               SET status = 'CANCELLED', completed_at = now(),
                   error_message = coalesce(error_message, 'cancelled; ' || why)
             WHERE id = j.id;
            job_id := j.id; action := 'CANCELLED';
        ELSIF (j.status = 'CLAIMED' OR j.job_type = 'PLAN') AND j.attempts < p_max_attempts THEN
            UPDATE provision_jobs
               SET status = 'QUEUED', worker_id = NULL, claimed_at = NULL, started_at = NULL,
                   last_activity_at = now()
             WHERE id = j.id;
            INSERT INTO provision_job_logs (job_id, stream_type, log_chunk)
            VALUES (j.id, 'SYSTEM', why || '; requeued');
            job_id := j.id; action := 'REQUEUED';
        ELSE
            UPDATE provision_jobs
               SET status = 'FAILED', completed_at = now(),
                   error_message = why || CASE WHEN j.job_type = 'DEPLOY' AND j.status = 'PROCESSING'
                       THEN '; terraform may have applied part of the plan: re-plan and deploy again'
                       ELSE '; it ran out of attempts' END
             WHERE id = j.id;
            job_id := j.id; action := 'FAILED';
        END IF;
        UPDATE workers SET current_job_id = NULL WHERE id = j.worker_id AND current_job_id = j.id;
        RETURN NEXT;
    END LOOP;
END;
$$;

-- True when p_token is the token of worker p_worker (sha256 hex stored in workers.token_hash).
CREATE FUNCTION worker_token_valid(p_worker text, p_token text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (SELECT 1 FROM workers
                   WHERE id = p_worker AND token_hash = encode(sha256(convert_to(p_token, 'UTF8')), 'hex'));
$$;
