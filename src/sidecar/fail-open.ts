/**
 * `onStoreError: fail-open` (G4's explicit option), built around the engine without changing it.
 *
 * While the store cannot be reached, a check still verifies the credential, but lockout is
 * neither enforced nor counted: a correct credential answers success, a wrong one the ordinary
 * "invalid" answer with `failedAttempts: "0"`, a locked user is not refused (the lock cannot be
 * read). Every such answer logs a warning. What needs the store for the credential itself still
 * answers 503: issued SMS/Email codes are kept in the store, so they can be neither issued nor
 * checked. TOTP codes are verified, but their replay protection (a code accepted once is refused
 * the second time) is skipped while the store is down. Admin and settings routes answer 503.
 */
import { decodeAttemptId, encodeAttemptId, newNonce } from '../core/attempt-id';
import { NotFoundError, StoreUnavailableError } from '../core/errors';
import {
  LockoutEngine,
  type LockoutEngineOptions,
  type Reservation,
  type ReserveOutcome,
  type Settlement,
} from '../core/engine';
import type { LockoutStore, SettleOutcome } from '../core/store';
import { makeSubject, validateFactor, type Factor } from '../core/subjects';

export interface FailOpenNotice {
  readonly operation: 'reserve' | 'settle' | 'useStep';
  readonly org: string;
  readonly user: string;
  readonly factor?: Factor;
}

export interface FailOpenEngineOptions extends LockoutEngineOptions {
  /** Told of every answer given without lockout (log a warning, count it). Must not throw. */
  onFailOpen: (notice: FailOpenNotice) => void;
}

/** Most reservations handed out while the store is down that are kept for settling. */
const MAX_OPEN_ATTEMPTS = 100_000;

/**
 * A LockoutEngine whose reserve and settle fail open on StoreUnavailableError (and so its check,
 * which is the plain engine's reserve → evaluate → settle on them). Everything else (status,
 * lock, unlock, settings) behaves as the plain engine, 503 included. Each attempt is told once:
 * when it is reserved without the store, or when a real reservation cannot be settled.
 */
export class FailOpenEngine extends LockoutEngine {
  private readonly notify: (notice: FailOpenNotice) => void;
  /**
   * Attempt ids handed out while the store was down → their expiry and whether they were settled
   * (each is settled at most once, and only by this process). Kept until the lease ends.
   */
  private readonly open = new Map<string, { expiresAt: number; settled: boolean }>();

  constructor(options: FailOpenEngineOptions) {
    super(options);
    this.notify = options.onFailOpen;
  }

  override async reserve(orgId: string, userId: string, factor: Factor): Promise<ReserveOutcome> {
    try {
      return await super.reserve(orgId, userId, factor);
    } catch (error) {
      if (!(error instanceof StoreUnavailableError)) throw error;
      const subject = makeSubject(this.instanceId, orgId, userId);
      validateFactor(factor);
      const now = Date.now();
      this.purge(now);
      if (this.open.size >= MAX_OPEN_ATTEMPTS) throw error;
      const attemptId = encodeAttemptId({ org: subject.org, user: subject.user, factor, nonce: newNonce() });
      const expiresAt = now + this.config.leaseMs;
      this.open.set(attemptId, { expiresAt, settled: false });
      this.tell({ operation: 'reserve', org: subject.org, user: subject.user, factor });
      const reservation: Reservation = {
        attemptId,
        orgId: subject.org,
        userId: subject.user,
        factor,
        expiresAt,
      };
      return { status: 'admitted', reservation };
    }
  }

  override async settle(attempt: Reservation | string, outcome: SettleOutcome): Promise<Settlement> {
    const attemptId = typeof attempt === 'string' ? attempt : attempt.attemptId;
    const entry = this.open.get(attemptId);
    if (entry !== undefined) {
      if (entry.settled || entry.expiresAt < Date.now()) {
        throw new NotFoundError('Errors.Attempt.NotFound', 'Attempt not found, expired or already settled');
      }
      // Told once already, when it was reserved without the store: one notice per attempt.
      entry.settled = true;
      return { failedAttempts: 0, locked: false };
    }
    try {
      return await super.settle(attempt, outcome);
    } catch (error) {
      if (!(error instanceof StoreUnavailableError)) throw error;
      const ref = decodeAttemptId(attemptId);
      if (outcome !== 'release')
        this.tell({ operation: 'settle', org: ref.org, user: ref.user, factor: ref.factor });
      return { failedAttempts: 0, locked: false };
    }
  }

  /**
   * The store view for the TOTP verifier: `useStep` answers true (the code is accepted) when the
   * store cannot be reached, so that a correct TOTP code still passes (replay protection off).
   */
  totpStore(store: Pick<LockoutStore, 'useStep'>): Pick<LockoutStore, 'useStep'> {
    return {
      useStep: async (subject, key, step, ttlMs) => {
        try {
          return await store.useStep(subject, key, step, ttlMs);
        } catch (error) {
          if (!(error instanceof StoreUnavailableError)) throw error;
          this.tell({ operation: 'useStep', org: subject.org, user: subject.user, factor: 'totp' });
          return true;
        }
      },
    };
  }

  private tell(notice: FailOpenNotice): void {
    try {
      this.notify(notice);
    } catch {
      // an observer must not change the answer
    }
  }

  private purge(now: number): void {
    // Insertion order is expiry order (one lease for all).
    for (const [id, { expiresAt }] of this.open) {
      if (expiresAt >= now) break;
      this.open.delete(id);
    }
  }
}
