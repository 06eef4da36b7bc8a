/**
 * The one kafkajs internal the project touches (see `poolEncoderBuffers` in kafka.ts): the encoder
 * its protocol writes requests with. Only the members used are declared.
 */
declare module 'kafkajs/src/protocol/encoder.js' {
  class Encoder {
    static nextPowerOfTwo(value: number): number;
    constructor(initialSize?: number);
    buf: Buffer;
    offset: number;
    get buffer(): Buffer;
    ensureAvailable(length: number): void;
    writeBufferInternal(buffer: Buffer): void;
    writeEncoder(value: Encoder): Encoder;
    writeEncoderArray(value: Encoder[]): Encoder;
  }
  export default Encoder;
}
