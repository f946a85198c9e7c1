import { InvalidArgumentError } from '../../src/core/errors';
import { makeSubject, validateId } from '../../src/core/subjects';

describe('validateId: ids are well-formed Unicode', () => {
  it.each([
    ['a lone high surrogate', '\ud800'],
    ['a lone low surrogate', '\udfff'],
    ['a high surrogate at the end', 'alice\ud83d'],
    ['a low surrogate at the start', '\ude00alice'],
    ['a reversed pair', '\ude00\ud83d'],
  ])('refuses %s with InvalidArgumentError naming the field', (_what, id) => {
    expect(() => validateId(id, 'userId')).toThrow(InvalidArgumentError);
    expect(() => validateId(id, 'userId')).toThrow(/userId must be well-formed Unicode/);
  });

  it.each([
    ['ASCII', 'alice'],
    ['a ZITADEL numeric id', '69629023906488334'],
    ['a surrogate pair (emoji)', 'al\ud83d\ude00ice'],
    ['non-Latin text', 'ユーザー'],
    ['256 emoji halves = 128 pairs', '\ud83d\ude00'.repeat(128)],
  ])('accepts %s', (_what, id) => {
    expect(validateId(id, 'userId')).toBe(id);
    expect((id as unknown as { isWellFormed(): boolean }).isWellFormed()).toBe(true);
  });

  it('makeSubject names orgId and userId', () => {
    expect(() => makeSubject('i', '\ud800', 'u')).toThrow(/orgId/);
    expect(() => makeSubject('i', 'o', '\ud800')).toThrow(/userId/);
    expect(makeSubject('i', 'o', 'u')).toEqual({ instance: 'i', org: 'o', user: 'u' });
  });
});
