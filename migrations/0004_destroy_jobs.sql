-- tendril platform schema, version 4.
--
-- * provision_jobs.job_type: DESTROY jobs (tear down the cluster's own
--   objects, then terraform destroy). Finalizing one marks the vine DESTROYED
--   on success and removes its cluster, database and cache rows (they name
--   resources that no longer exist); the state stays in its bucket.

ALTER TABLE provision_jobs DROP CONSTRAINT IF EXISTS provision_jobs_job_type_check;
ALTER TABLE provision_jobs ADD CONSTRAINT provision_jobs_job_type_check
    CHECK (job_type IN ('PLAN', 'DEPLOY', 'DESTROY'));

-- Only a DEPLOY names the PLAN job whose plan it applies; a DESTROY names none.
ALTER TABLE provision_jobs DROP CONSTRAINT IF EXISTS provision_jobs_check;
ALTER TABLE provision_jobs ADD CONSTRAINT provision_jobs_deploy_names_its_plan
    CHECK (job_type <> 'DEPLOY' OR plan_job_id IS NOT NULL);
