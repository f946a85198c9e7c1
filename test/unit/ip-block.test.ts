import { ipBlock } from '../../src/core/ip-block';
import { resolveSprayThrottle, SprayThrottle } from '../../src/core/spray-throttle';
import { createSprayCounter } from '../../src/store/spray-counter';

describe('ipBlock', () => {
  it.each([
    ['203.0.113.7', '203.0.113.7/32'],
    ['::ffff:203.0.113.7', '203.0.113.7/32'],
    ['::FFFF:cb00:7107', '203.0.113.7/32'],
    ['2001:db8:1:2:3:4:5:6', '2001:db8:1:2::/64'],
    ['2001:DB8:1:2::1', '2001:db8:1:2::/64'],
    ['2001:db8::1', '2001:db8::/64'],
    ['fe80::1%eth0', 'fe80::/64'],
    ['::1', '::/64'],
    ['2001:db8:0:0:1::', '2001:db8::/64'],
  ])('%s is counted as %s', (address, block) => {
    expect(ipBlock(address)).toBe(block);
  });

  it('takes other IPv6 prefixes', () => {
    expect(ipBlock('2001:db8:1:2::1', 48)).toBe('2001:db8:1::/48');
    expect(ipBlock('2001:db8:1:2::1', 56)).toBe('2001:db8:1::/56');
    expect(ipBlock('2001:db8:1:2ff::1', 56)).toBe('2001:db8:1:200::/56');
    expect(ipBlock('2001:db8:1:2::1', 128)).toBe('2001:db8:1:2::1/128');
  });

  it.each([
    '',
    'localhost',
    '1.2.3',
    '1.2.3.4.5',
    '2001:db8::1::2',
    '::ffff:1.2.3',
    '10.0.0.1/8',
    'x'.repeat(100),
  ])('%j is not an address', (address) => {
    expect(ipBlock(address)).toBeUndefined();
  });
});

describe('SprayThrottle tickets', () => {
  const throttle = new SprayThrottle(
    resolveSprayThrottle({}),
    createSprayCounter({ keyPrefix: 'unit', points: 100, windowSeconds: 60 }),
    { instanceId: 'default' },
  );

  it('round-trips a ticket and refuses anything it would not have made', () => {
    const ticket = { ip: '2001:db8::/64', last: true };
    expect(throttle.decode(SprayThrottle.encode(ticket))).toEqual(ticket);
    const forge = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');
    expect(throttle.decode(forge(['10.0.0.1/8', 0]))).toBeUndefined();
    expect(throttle.decode(forge(['2001:db8::1/64', 0]))).toBeUndefined();
    expect(throttle.decode(forge(['203.0.113.7/32', 2]))).toBeUndefined();
    expect(throttle.decode(forge(['203.0.113.7/32']))).toBeUndefined();
    expect(throttle.decode('not base64url!')).toBeUndefined();
  });

  it('a check without an address is not throttled (no ticket)', async () => {
    await expect(throttle.admit(undefined)).resolves.toBeUndefined();
    await expect(throttle.admit('not an ip')).resolves.toBeUndefined();
  });
});
