"""Settings -> MongoDB and Redis clients: the only place that picks a configured URL or
the embedded server (mongo.open_target; redis.open_redis, running_redis_url, ...)."""
