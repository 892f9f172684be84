-- tendril platform schema, version 2.
--
-- * provision_jobs.error_phase: the phase a job failed in, apart from its message
--   (error_message is then exactly what went wrong, e.g. the contract's stale-plan
--   sentence).
-- * Claim order: a job is claimed only when no older QUEUED job of its vine waits.
--   Before, a claimer could take a newer job of a vine while a concurrent claimer
--   held the older one locked (FOR UPDATE SKIP LOCKED skips it).

ALTER TABLE provision_jobs ADD COLUMN error_phase text;

-- "Is an older job of this vine still QUEUED?" is an index probe.
CREATE INDEX provision_jobs_queued_by_vine ON provision_jobs (vine_id, created_at, id)
    WHERE status = 'QUEUED';

CREATE OR REPLACE FUNCTION tendril_try_claim(p_job provision_jobs, p_worker text)
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
    -- Oldest first within a vine, always: an older job of the vine that is still
    -- QUEUED (perhaps held by another claimer right now) goes first.
    IF EXISTS (SELECT 1 FROM provision_jobs o
               WHERE o.vine_id = p_job.vine_id AND o.status = 'QUEUED'
                 AND (o.created_at, o.id) < (p_job.created_at, p_job.id)) THEN
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

-- True when a QUEUED job waits that p_worker could claim (its vine idle, and it is
-- the oldest QUEUED job of its vine): an empty claim_next_job() then only met rows
-- that concurrent claimers held, and the worker claims again at once.
CREATE FUNCTION tendril_claimable_exists(p_worker text)
RETURNS boolean
LANGUAGE sql STABLE AS $$
    SELECT EXISTS (
        SELECT 1 FROM provision_jobs j
        WHERE j.status = 'QUEUED'
          AND (j.assigned_worker_id IS NULL OR j.assigned_worker_id = p_worker)
          AND NOT EXISTS (SELECT 1 FROM provision_jobs a
                          WHERE a.vine_id = j.vine_id AND a.status IN ('CLAIMED', 'PROCESSING'))
          AND NOT EXISTS (SELECT 1 FROM provision_jobs o
                          WHERE o.vine_id = j.vine_id AND o.status = 'QUEUED'
                            AND (o.created_at, o.id) < (j.created_at, j.id)));
$$;
