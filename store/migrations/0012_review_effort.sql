-- People's seconds per review task (wave 3, issue 26): what the reviewer did to the pre-annotation it was shown
-- (boxes kept, fixed, added, deleted, by class) and what it cost, from Label Studio's lead_time where it
-- measured one, else from the cost model in settings (the oracle's answers are priced the same way).
ALTER TABLE review_tasks ADD COLUMN effort JSON;
ALTER TABLE review_tasks ADD COLUMN effort_s DOUBLE;
