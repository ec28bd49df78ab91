/**
 * flannel decodes its JSON with Go's encoding/json, which matches object keys
 * to field names case-insensitively ("network" fills Network). Config, lease
 * and backend options written for flannel rely on that, so every reader here
 * looks fields up the same way.
 */

/** The key of obj that Go would use for field `name`, if any. */
function goFieldKey(obj: Record<string, unknown>, name: string): string | undefined {
  const want = name.toLowerCase();
  return Object.keys(obj).find((k) => k.toLowerCase() === want);
}

/** The value Go would decode into field `name` (undefined when absent). */
export function goField(obj: Record<string, unknown>, name: string): unknown {
  const key = goFieldKey(obj, name);
  return key === undefined ? undefined : obj[key];
}
