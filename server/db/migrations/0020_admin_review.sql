-- The back office reviews risk flags (server/backoffice/risk.py: POST /admin/api/risk/flags/{id}/review,
-- `croupier risk review`): each review is recorded in admin_actions like every other write.
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_action_check;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_action_check
    CHECK (action IN ('block', 'unblock', 'adjust', 'void', 'publish', 'review'));
