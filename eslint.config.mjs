// ESLint flat config: JavaScript and TypeScript sources, tests, examples and scripts.
// Generated and built files are not linted (the napi loader, dist/, docs/, npm/).
import js from '@eslint/js'
import { defineConfig, globalIgnores } from 'eslint/config'
import globals from 'globals'
import tseslint from 'typescript-eslint'

export default defineConfig([
  globalIgnores([
    'dist/',
    'docs/',
    'npm/',
    'target/',
    'index.js',
    'index.d.ts',
    '**/*.node',
    'bench/results/',
  ]),
  js.configs.recommended,
  tseslint.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2023,
      globals: { ...globals.node },
    },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
    rules: {
      // `_`-prefixed names are deliberately unused (destructuring, callbacks).
      '@typescript-eslint/no-unused-vars': [
        'error',
        { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrorsIgnorePattern: '^_' },
      ],
      'no-constant-condition': ['error', { checkLoops: false }],
      // `for (let s = this; s; s = s.parent)` walks are idiomatic, not a confusion of `this`.
      '@typescript-eslint/no-this-alias': 'off',
    },
  },
  {
    // The type test: values are declared to be looked at by the type checker only.
    files: ['__test__/typings/**'],
    rules: {
      '@typescript-eslint/no-unused-vars': 'off',
      '@typescript-eslint/no-unused-expressions': 'off',
      '@typescript-eslint/no-require-imports': 'off',
    },
  },
  {
    // CommonJS scripts may use require().
    files: ['**/*.cjs', 'examples/**/*.js'],
    languageOptions: { sourceType: 'commonjs' },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
])
