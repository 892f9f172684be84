-- tendril platform schema, version 3.
--
-- * Stale recovery also takes back the jobs of a worker that heartbeats but no
--   longer runs them: a worker restarted under the same id (a supervisor, a
--   StatefulSet) heartbeats at once, so its heartbeat never grows old, yet the
--   job its previous process ran is gone with that process. A live worker
--   names its current job in every heartbeat; a job claimed longer ago than the
--   heartbeat timeout whose worker's fresh heartbeat names another job (or
--   none) is recovered like the job of a dead worker. (Within the timeout a
--   heartbeat may still predate the claim.)

CREATE OR REPLACE FUNCTION recover_stale_jobs(
    p_heartbeat_timeout interval DEFAULT interval '60 seconds',
    p_silence interval DEFAULT interval '5 minutes',
    p_max_attempts integer DEFAULT 3)
RETURNS TABLE (job_id uuid, action text)
LANGUAGE plpgsql AS $$
DECLARE
    j provision_jobs;
    w workers;
    why text;
BEGIN
    UPDATE workers SET status = 'OFFLINE'
     WHERE status <> 'OFFLINE' AND last_heartbeat < now() - p_heartbeat_timeout;
    FOR j IN
        SELECT p.* FROM provision_jobs p
        LEFT JOIN workers wk ON wk.id = p.worker_id
        WHERE p.status IN ('CLAIMED', 'PROCESSING')
          AND (wk.id IS NULL
               OR wk.last_heartbeat < now() - p_heartbeat_timeout
               OR coalesce(p.last_activity_at, p.claimed_at, p.created_at) < now() - p_silence
               OR (wk.current_job_id IS DISTINCT FROM p.id
                   AND coalesce(p.claimed_at, p.created_at) < now() - p_heartbeat_timeout
                   AND wk.last_heartbeat > coalesce(p.claimed_at, p.created_at) + p_heartbeat_timeout))
        FOR UPDATE OF p SKIP LOCKED
    LOOP
        SELECT * INTO w FROM workers WHERE id = j.worker_id;
        IF w.id IS NOT NULL AND w.last_heartbeat >= now() - p_heartbeat_timeout
           AND w.current_job_id IS DISTINCT FROM j.id
           AND coalesce(j.last_activity_at, j.claimed_at, j.created_at) >= now() - p_silence THEN
            why := format('worker %s stopped heartbeating for this job: it heartbeats again without it (restarted)', j.worker_id);
        ELSE
            why := format('worker %s stopped heartbeating or the job was silent too long', coalesce(j.worker_id, '(gone)'));
        END IF;
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
