-- Whether the user's last initData said `allows_write_to_pm` (the user allowed the bot to message
-- them). Part of the profile a sign-in compares, so a change is written (and acted on) at once.
ALTER TABLE users ADD COLUMN allows_write_to_pm BOOLEAN NOT NULL DEFAULT false;
