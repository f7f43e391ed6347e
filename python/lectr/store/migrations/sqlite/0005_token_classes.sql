-- Token classes of the agent protocols (OpenAI Responses, Anthropic Messages):
-- of prompt_tokens, those written to the provider's prompt cache (cached_tokens
-- are those read from it); of completion_tokens, those spent on reasoning.
-- NULL where the provider reports no such class (and on older rows).
ALTER TABLE requests ADD COLUMN cache_write_tokens INTEGER;
ALTER TABLE requests ADD COLUMN reasoning_tokens INTEGER;
