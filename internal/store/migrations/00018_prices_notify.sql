-- The rate card reaches extproc through the control plane (it prices each
-- request for its trace span), so a change to prices notifies the control
-- plane like a change to the model tables does.

-- +goose Up
CREATE TRIGGER prices_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON prices
    FOR EACH STATEMENT EXECUTE FUNCTION ccproxy_notify_config();

-- +goose Down
DROP TRIGGER prices_notify ON prices;
