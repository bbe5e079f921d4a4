// Stand-ins for the editor modules the .codex merge path never calls. Each
// records the call before it throws: the editor wraps some calls in
// try/catch, and the driver must still fail when one was reached.
export const calls: string[] = [];

export function notCalled(name: string): (...args: unknown[]) => never {
    return () => {
        calls.push(name);
        throw new Error(`${name} is not part of the .codex merge path`);
    };
}

// An object whose every property access is a call that was not expected.
export function notUsed(name: string): any {
    return new Proxy(
        {},
        {
            get(_target, prop) {
                return notCalled(`${name}.${String(prop)}`)();
            },
        }
    );
}
