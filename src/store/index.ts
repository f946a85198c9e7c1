export type * from '../core/store';
export { MemoryStore, type MemoryStoreOptions } from './memory/memory-store';
export { RedisStore, type RedisStoreOptions, type RedisClient } from './redis/redis-store';
