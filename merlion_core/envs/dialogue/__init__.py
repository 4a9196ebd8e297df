"""The MultiWOZ dialogue environment: schema, action set, goals, user simulator, rule policies."""
