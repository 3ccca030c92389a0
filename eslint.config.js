// ESLint flat config: typescript-eslint's type-aware rules catch the bugs that hurt
// async servers most (floating promises, promises passed where callbacks are expected).
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['**/node_modules/**', '**/dist/**', 'data/**', '.tap/**', 'coverage/**', '**/*.cjs', '**/bin/*.js'] },
  js.configs.recommended,
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: {
      parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
      '@typescript-eslint/consistent-type-imports': 'error',
      '@typescript-eslint/no-explicit-any': 'error',
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      eqeqeq: ['error', 'always'],
      'no-restricted-imports': [
        'error',
        { patterns: [{ group: ['child_process', 'fs', 'fs/*', 'crypto', 'path', 'os', 'net', 'http', 'https'], message: 'Use the node: prefix.' }] },
      ],
    },
  },
  {
    // tap awaits and reports every subtest itself, so `t.test(...)` is not awaited
    // by convention; the rule stays on for all source code.
    files: ['test/**/*.ts'],
    rules: {
      '@typescript-eslint/require-await': 'off',
      '@typescript-eslint/no-floating-promises': 'off',
    },
  },
  {
    // The data layer runs on SQLite and PostgreSQL: drizzle builders are awaited, never run
    // with SQLite's synchronous .get()/.all()/.run() (see control-plane/src/db/index.ts).
    files: ['control-plane/src/db/**/*.ts'],
    ignores: ['control-plane/src/db/tx.ts'],
    rules: {
      'no-restricted-syntax': [
        'error',
        {
          selector: 'CallExpression[arguments.length=0] > MemberExpression.callee > Identifier.property[name=/^(get|all|run)$/]',
          message: 'Await the drizzle builder instead: .get()/.all()/.run() exist on SQLite only.',
        },
      ],
    },
  },
  {
    files: ['eslint.config.js'],
    ...tseslint.configs.disableTypeChecked,
  },
);
